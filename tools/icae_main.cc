// `icae`: the project's command-line tool. Subcommands live in tools/*_cmd.cc and register
// themselves (tools/command.h); this file only finds the longest matching name and runs it.
#include <iostream>
#include <string>
#include <vector>

#include "tools/command.h"

namespace icae::tools {

std::map<std::string, Command>& CommandRegistry() {
  static auto* registry = new std::map<std::string, Command>();
  return *registry;
}

namespace {

void PrintUsage(std::ostream& os) {
  os << "usage: icae <command> [flags]\n\ncommands:\n";
  for (const auto& [name, cmd] : CommandRegistry()) {
    os << "  " << name << std::string(name.size() < 18 ? 18 - name.size() : 1, ' ')
       << cmd.summary << "\n";
  }
}

}  // namespace
}  // namespace icae::tools

int main(int argc, char** argv) {
  using icae::tools::CommandRegistry;
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "help" || args[0] == "--help" || args[0] == "-h") {
    icae::tools::PrintUsage(args.empty() ? std::cerr : std::cout);
    return args.empty() ? 2 : 0;
  }
  // Longest match first: "bench decode" before "bench".
  for (size_t words = std::min<size_t>(args.size(), 3); words >= 1; --words) {
    std::string name = args[0];
    for (size_t i = 1; i < words; ++i) name += " " + args[i];
    auto it = CommandRegistry().find(name);
    if (it != CommandRegistry().end()) {
      std::vector<std::string> rest(args.begin() + words, args.end());
      return it->second.run(rest);
    }
  }
  std::cerr << "icae: unknown command '" << args[0] << "'\n";
  icae::tools::PrintUsage(std::cerr);
  return 2;
}
