// A small flag parser for `icae` subcommands: `--name value`, `--name=value`, boolean
// `--name`, repeated flags, and `--` to end the flags (what follows is positional even if it
// begins with `-`). Unknown flags are errors, so typos never pass silently.
#ifndef ICAE_TOOLS_ARGS_H_
#define ICAE_TOOLS_ARGS_H_

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace icae::tools {

class Args {
 public:
  // value_flags take a value; bool_flags do not. Names are given without the leading "--".
  static absl::StatusOr<Args> Parse(const std::vector<std::string>& argv,
                                    const std::set<std::string>& value_flags,
                                    const std::set<std::string>& bool_flags);

  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  // Last value given for the flag, or `def`.
  std::string Get(const std::string& name, const std::string& def = "") const;
  std::vector<std::string> GetAll(const std::string& name) const;
  absl::StatusOr<int64_t> GetInt(const std::string& name, int64_t def) const;
  absl::StatusOr<double> GetDouble(const std::string& name, double def) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::map<std::string, std::vector<std::string>> values_;
  std::vector<std::string> positional_;
};

// Parses "1 2 3" (spaces/commas) into ids.
absl::StatusOr<std::vector<int64_t>> ParseIdList(const std::string& text);

// Parses a --lengths list "128,256,512" (empty → {}); every entry an integer >= 2.
absl::StatusOr<std::vector<int64_t>> ParseLengthList(const std::string& list);

}  // namespace icae::tools

#endif  // ICAE_TOOLS_ARGS_H_
