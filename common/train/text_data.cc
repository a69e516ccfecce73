#include "common/train/text_data.h"

#include <fstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

namespace icae::train {

absl::StatusOr<std::vector<int32_t>> TokenizeTextFile(const Tokenizer& tokenizer,
                                                      const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open text file ", path));
  std::vector<int32_t> out;
  std::string line;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto ids = tokenizer.Encode(line, /*add_bos=*/false);
    out.insert(out.end(), ids.begin(), ids.end());
  }
  if (out.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no text"));
  return out;
}

std::mt19937_64 StepRng(uint64_t seed, int64_t step, int64_t micro) {
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                    static_cast<uint32_t>(step), static_cast<uint32_t>(micro), 0x1CAEu};
  return std::mt19937_64(seq);
}

std::vector<int64_t> RandomWindow(const std::vector<int32_t>& stream, int64_t length,
                                  std::mt19937_64& rng) {
  const int64_t n = static_cast<int64_t>(stream.size());
  length = std::min(length, n);
  std::uniform_int_distribution<int64_t> d(0, n - length);
  const int64_t b = d(rng);
  return std::vector<int64_t>(stream.begin() + b, stream.begin() + b + length);
}

std::vector<int64_t> SpacedWindow(const std::vector<int32_t>& stream, int64_t length, int64_t k,
                                  int64_t count) {
  const int64_t n = static_cast<int64_t>(stream.size());
  length = std::min(length, n);
  const int64_t room = n - length;
  const int64_t b = count <= 1 ? 0 : room * k / (count - 1);
  return std::vector<int64_t>(stream.begin() + b, stream.begin() + b + length);
}

absl::StatusOr<std::vector<InstructionExample>> LoadInstructionJsonl(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open instruction file ", path));
  std::vector<InstructionExample> out;
  std::string line;
  int64_t lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", lineno, ": not a JSON object"));
    }
    InstructionExample e;
    for (auto [key, dst] : {std::pair<const char*, std::string*>{"input", &e.input},
                            {"prompt", &e.prompt}, {"answer", &e.answer}}) {
      if (!j.contains(key) || !j[key].is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ":", lineno, ": needs a string field '", key, "'"));
      }
      *dst = j[key].get<std::string>();
    }
    if (j.contains("task") && j["task"].is_string()) e.task = j["task"].get<std::string>();
    out.push_back(std::move(e));
  }
  if (out.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no examples"));
  return out;
}

}  // namespace icae::train
