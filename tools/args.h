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

// Numeric flags read one after another, the first bad value remembered: read them all, then
// check status() once before using any (a bad value reads as its default until then).
//   NumericFlags num(*args);
//   const int64_t n = num.Int("steps", 100);
//   const double lr = num.Double("lr", 1e-3);
//   if (!num.status().ok()) return Fail(cmd, std::string(num.status().message()), 2);
class NumericFlags {
 public:
  explicit NumericFlags(const Args& args) : args_(args) {}
  int64_t Int(const std::string& name, int64_t def);
  double Double(const std::string& name, double def);
  const absl::Status& status() const { return status_; }

 private:
  const Args& args_;
  absl::Status status_;
};

// Parses "1 2 3" (spaces/commas) into ids.
absl::StatusOr<std::vector<int64_t>> ParseIdList(const std::string& text);

// Parses a list of lengths "128,256,512" (empty → {}) given as --<flag>; every entry an
// integer >= 2.
absl::StatusOr<std::vector<int64_t>> ParseLengthList(const std::string& list, const std::string& flag = "lengths");

}  // namespace icae::tools

#endif  // ICAE_TOOLS_ARGS_H_
