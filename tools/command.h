// Subcommands of the `icae` tool register themselves here; icae_main.cc dispatches.
#ifndef ICAE_TOOLS_COMMAND_H_
#define ICAE_TOOLS_COMMAND_H_

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace icae::tools {

// A subcommand gets the arguments after its name(s); returns the process exit code.
using CommandFn = std::function<int(const std::vector<std::string>& args)>;

struct Command {
  std::string name;     // e.g. "tokenize" or "bench decode" (words separated by one space)
  std::string summary;  // one line for `icae help`
  CommandFn run;
};

std::map<std::string, Command>& CommandRegistry();

struct CommandRegistrar {
  CommandRegistrar(const std::string& name, const std::string& summary, CommandFn fn) {
    CommandRegistry()[name] = Command{name, summary, std::move(fn)};
  }
};

}  // namespace icae::tools

#define ICAE_CONCAT2_(a, b) a##b
#define ICAE_CONCAT1_(a, b) ICAE_CONCAT2_(a, b)
// ICAE_REGISTER_COMMAND("bench store", "one-line summary", Function);
#define ICAE_REGISTER_COMMAND(name, summary, fn) \
  static ::icae::tools::CommandRegistrar ICAE_CONCAT1_(icae_cmd_, __LINE__)(name, summary, fn)

#endif  // ICAE_TOOLS_COMMAND_H_
