#include "common/model/safetensors_header.h"

#include <algorithm>
#include <limits>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace icae {
namespace {

using json = nlohmann::json;

// Bound on the JSON header: real checkpoints have a few hundred KB; anything larger is corrupt.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

struct DtypeSize {
  const char* name;
  size_t size;
};
constexpr DtypeSize kDtypeSizes[] = {
    {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"F64", 8}, {"I64", 8},
    {"I32", 4}, {"I16", 2}, {"I8", 1},   {"U8", 1},  {"BOOL", 1},
};

}  // namespace

size_t SafetensorsDtypeSize(const std::string& dtype) {
  for (const auto& e : kDtypeSizes) {
    if (dtype == e.name) return e.size;
  }
  return 0;
}

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(const uint8_t* base, size_t size) {
  auto bad = [](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("invalid safetensors: ", what));
  };
  if (size < 8) return bad(absl::StrCat("file is ", size, " bytes, shorter than the 8-byte header length"));
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | base[i];
  if (n > size - 8) {
    return bad(absl::StrCat("header length ", n, " goes beyond the end of the file (", size, " bytes)"));
  }
  if (n > kMaxHeaderBytes) return bad(absl::StrCat("header length ", n, " exceeds the bound ", kMaxHeaderBytes));
  json header = json::parse(base + 8, base + 8 + n, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) return bad("header is not a JSON object");
  SafetensorsHeader out;
  out.data_offset = 8 + n;
  out.data_size = size - 8 - n;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  std::vector<std::string> range_names;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") {
      if (!it->is_object()) return bad("__metadata__ is not an object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (m->is_string()) out.metadata[m.key()] = m->get<std::string>();
      }
      continue;
    }
    const json& e = *it;
    if (!e.is_object()) return bad(absl::StrCat("entry '", name, "' is not an object"));
    auto dt = e.find("dtype");
    auto sh = e.find("shape");
    auto off = e.find("data_offsets");
    if (dt == e.end() || !dt->is_string()) return bad(absl::StrCat("tensor '", name, "': missing dtype"));
    const size_t elem = SafetensorsDtypeSize(dt->get<std::string>());
    if (elem == 0) {
      return bad(absl::StrCat("tensor '", name, "': unknown dtype '", dt->get<std::string>(), "'"));
    }
    if (sh == e.end() || !sh->is_array()) return bad(absl::StrCat("tensor '", name, "': missing shape"));
    if (off == e.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
        !(*off)[1].is_number_unsigned()) {
      return bad(absl::StrCat("tensor '", name, "': data_offsets must be two non-negative integers"));
    }
    SafetensorsEntry entry;
    entry.dtype = dt->get<std::string>();
    uint64_t numel = 1;
    for (const auto& d : *sh) {
      if (!d.is_number_unsigned()) return bad(absl::StrCat("tensor '", name, "': bad shape"));
      uint64_t v = d.get<uint64_t>();
      // A zero elsewhere in the shape keeps the product small, so bound each dimension too:
      // shapes become int64 tensor sizes.
      if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return bad(absl::StrCat("tensor '", name, "': dimension ", v, " is too large"));
      }
      if (v > 0 && numel > std::numeric_limits<uint64_t>::max() / 16 / v) {
        return bad(absl::StrCat("tensor '", name, "': shape overflows"));
      }
      numel *= v;
      entry.shape.push_back(static_cast<int64_t>(v));
    }
    entry.begin = (*off)[0].get<uint64_t>();
    entry.end = (*off)[1].get<uint64_t>();
    if (entry.begin > entry.end || entry.end > out.data_size) {
      return bad(absl::StrCat("tensor '", name, "': data_offsets [", entry.begin, ", ", entry.end,
                              ") outside the data section (", out.data_size, " bytes)"));
    }
    if (entry.end - entry.begin != numel * elem) {
      return bad(absl::StrCat("tensor '", name, "': ", entry.end - entry.begin,
                              " bytes for shape [", absl::StrJoin(entry.shape, ", "), "] of ",
                              entry.dtype, " (expected ", numel * elem, ")"));
    }
    if (entry.end > entry.begin) {
      ranges.emplace_back(entry.begin, entry.end);
      range_names.push_back(name);
    }
    out.tensors[name] = std::move(entry);
  }
  std::vector<size_t> order(ranges.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return ranges[a] < ranges[b]; });
  for (size_t i = 1; i < order.size(); ++i) {
    if (ranges[order[i]].first < ranges[order[i - 1]].second) {
      return bad(absl::StrCat("tensors '", range_names[order[i - 1]], "' and '",
                              range_names[order[i]], "' overlap"));
    }
  }
  return out;
}

}  // namespace icae
