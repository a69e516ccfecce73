#include "tools/args.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace icae::tools {

absl::StatusOr<Args> Args::Parse(const std::vector<std::string>& argv,
                                 const std::set<std::string>& value_flags,
                                 const std::set<std::string>& bool_flags) {
  Args args;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (a == "--") {
      for (size_t j = i + 1; j < argv.size(); ++j) args.positional_.push_back(argv[j]);
      break;
    }
    if (a.size() > 2 && a[0] == '-' && a[1] == '-') {
      std::string name = a.substr(2);
      std::string value;
      bool has_inline = false;
      size_t eq = name.find('=');
      if (eq != std::string::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
        has_inline = true;
      }
      if (bool_flags.count(name)) {
        if (has_inline && value != "true" && value != "false") {
          return absl::InvalidArgumentError(absl::StrCat("--", name, " takes no value"));
        }
        if (!has_inline || value == "true") args.values_[name].push_back("true");
        continue;
      }
      if (!value_flags.count(name)) {
        return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
      }
      if (!has_inline) {
        if (i + 1 >= argv.size()) {
          return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
        }
        value = argv[++i];
      }
      args.values_[name].push_back(value);
      continue;
    }
    args.positional_.push_back(a);
  }
  return args;
}

std::string Args::Get(const std::string& name, const std::string& def) const {
  auto it = values_.find(name);
  return it == values_.end() ? def : it->second.back();
}

std::vector<std::string> Args::GetAll(const std::string& name) const {
  auto it = values_.find(name);
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

absl::StatusOr<int64_t> Args::GetInt(const std::string& name, int64_t def) const {
  if (!Has(name)) return def;
  int64_t v;
  if (!absl::SimpleAtoi(Get(name), &v)) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, ": not an integer: ", Get(name)));
  }
  return v;
}

absl::StatusOr<double> Args::GetDouble(const std::string& name, double def) const {
  if (!Has(name)) return def;
  double v;
  if (!absl::SimpleAtod(Get(name), &v)) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, ": not a number: ", Get(name)));
  }
  return v;
}

int64_t NumericFlags::Int(const std::string& name, int64_t def) {
  auto v = args_.GetInt(name, def);
  if (!v.ok() && status_.ok()) status_ = v.status();
  return v.ok() ? *v : def;
}

double NumericFlags::Double(const std::string& name, double def) {
  auto v = args_.GetDouble(name, def);
  if (!v.ok() && status_.ok()) status_ = v.status();
  return v.ok() ? *v : def;
}

absl::StatusOr<std::vector<int64_t>> ParseIdList(const std::string& text) {
  std::vector<int64_t> ids;
  for (absl::string_view part :
       absl::StrSplit(text, absl::ByAnyChar(" ,\t\n"), absl::SkipEmpty())) {
    int64_t v;
    if (!absl::SimpleAtoi(part, &v)) {
      return absl::InvalidArgumentError(absl::StrCat("not a token id: '", part, "'"));
    }
    ids.push_back(v);
  }
  return ids;
}

absl::StatusOr<std::vector<int64_t>> ParseLengthList(const std::string& list, const std::string& flag) {
  std::vector<int64_t> out;
  for (absl::string_view part : absl::StrSplit(list, ',', absl::SkipEmpty())) {
    int64_t v = 0;
    if (!absl::SimpleAtoi(part, &v) || v < 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, ": '", part, "' is not a length >= 2 (a list like 128,256,512)"));
    }
    out.push_back(v);
  }
  return out;
}

}  // namespace icae::tools
