// Tokenizer tests: golden ids from llama2.c and SentencePiece, decode round trips, corrupt
// files, streaming decode, cross-checks against the spm_* tools, speed, and the CLI.
#include "common/tokenizer/tokenizer.h"

#include <chrono>
#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/tokenizer/llama2c_tokenizer.h"
#include "common/tokenizer/sentencepiece_tokenizer.h"
#include "common/tokenizer/utf8.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace icae {
namespace {

using ::icae::testing::IcaeBinary;
using ::icae::testing::MakeTempDir;
using ::icae::testing::PathExists;
using ::icae::testing::RunCommand;
using ::icae::testing::SharedDir;
using ::icae::testing::TestDataDir;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

std::string Tok512Path() { return SharedDir() + "/models/stories260K/tok512.bin"; }
std::string MistralPath() { return SharedDir() + "/tokenizers/mistral-v1/tokenizer.model"; }

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  out << data;
}

nlohmann::json ReadJson(const std::string& path) { return nlohmann::json::parse(ReadFile(path)); }

// Tokenizers are loaded once per path and shared by the tests.
const Tokenizer& LoadCached(const std::string& path) {
  static auto* cache = new std::map<std::string, std::unique_ptr<Tokenizer>>();
  auto it = cache->find(path);
  if (it == cache->end()) {
    auto tok = Tokenizer::Load(path);
    EXPECT_TRUE(tok.ok()) << tok.status();
    it = cache->emplace(path, tok.ok() ? std::move(tok).value() : nullptr).first;
  }
  if (it->second == nullptr) throw std::runtime_error("cannot load " + path);
  return *it->second;
}

// Bytes of a corpus, cut at a UTF-8 character boundary.
std::string CorpusPrefix(const std::string& name, size_t bytes) {
  std::string text = ReadFile(SharedDir() + "/corpora/" + name).substr(0, bytes);
  while (!text.empty() && (static_cast<uint8_t>(text.back()) & 0xC0) == 0x80) text.pop_back();
  if (!text.empty() && static_cast<uint8_t>(text.back()) >= 0xC0) text.pop_back();
  return text;
}

std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

// Streams `ids` through an IncrementalDecoder and checks the two promises: no chunk splits a
// UTF-8 character, and the chunks add up to Decode(ids).
void ExpectIncrementalMatchesDecode(const Tokenizer& tok, const std::vector<int32_t>& ids) {
  IncrementalDecoder dec(tok);
  std::string streamed;
  for (size_t i = 0; i < ids.size(); ++i) {
    const std::string chunk = dec.Push(ids[i]);
    EXPECT_TRUE(tokenizer_internal::IsValidUtf8(chunk)) << "chunk " << i << " splits a char";
    streamed += chunk;
  }
  const std::string tail = dec.Flush();
  EXPECT_TRUE(tokenizer_internal::IsValidUtf8(tail));
  streamed += tail;
  auto full = tok.Decode(ids);
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(streamed, *full) << "ids: " << absl::StrJoin(ids, " ");
}

// ---------------------------------------------------------------------------------------
// llama2.c tokenizer (tok512.bin)

TEST(Llama2cTokenizerTest, MatchesLlama2cGoldenIds) {
  const std::string golden = TestDataDir() + "/tok512_golden.json";
  ICAE_REQUIRE_TESTDATA(golden);
  ICAE_REQUIRE_TESTDATA(Tok512Path());
  const Tokenizer& tok = LoadCached(Tok512Path());
  EXPECT_EQ(tok.format(), "llama2c");
  EXPECT_EQ(tok.vocab_size(), 512);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_EQ(tok.IdToPiece(410), " ");
  EXPECT_EQ(tok.IdToPiece(259), " t");
  const nlohmann::json j = ReadJson(golden);
  ASSERT_GE(j["cases"].size(), 20u);
  for (const auto& c : j["cases"]) {
    const std::string text = c["text"];
    const std::vector<int32_t> want = c["ids"];
    EXPECT_THAT(tok.Encode(text, /*add_bos=*/true), ElementsAreArray(want))
        << "text: \"" << text << "\"";
    // Without BOS: the same ids minus the first.
    EXPECT_THAT(tok.Encode(text, false),
                ElementsAreArray(std::vector<int32_t>(want.begin() + 1, want.end())));
    // llama2.c decoding drops the dummy-prefix space after BOS: the text comes back.
    auto decoded = tok.Decode(want);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(*decoded, text);
  }
}

TEST(Llama2cTokenizerTest, DecodeMatchesWhatRunCPrints) {
  const std::string golden = TestDataDir() + "/stories260K_golden.json";
  ICAE_REQUIRE_TESTDATA(golden);
  ICAE_REQUIRE_TESTDATA(Tok512Path());
  const Tokenizer& tok = LoadCached(Tok512Path());
  const nlohmann::json j = ReadJson(golden);
  for (const auto& c : j["cases"]) {
    const std::vector<int32_t> prompt = c["prompt_ids"];
    std::vector<int32_t> greedy = c["greedy_ids"];
    const int stop = c["stop_index"];
    if (stop >= 0) greedy.resize(stop);
    EXPECT_THAT(tok.Encode(c["prompt"].get<std::string>(), true), ElementsAreArray(prompt));
    std::vector<int32_t> all = prompt;
    all.insert(all.end(), greedy.begin(), greedy.end());
    auto printed = tok.Decode(all);
    ASSERT_TRUE(printed.ok());
    EXPECT_EQ(*printed, c["printed_text"].get<std::string>());
    // Streaming after the prompt gives exactly the continuation run.c prints.
    IncrementalDecoder dec(tok, prompt);
    std::string streamed;
    for (int32_t id : greedy) streamed += dec.Push(id);
    streamed += dec.Flush();
    EXPECT_EQ(streamed, c["greedy_text"].get<std::string>());
  }
}

TEST(Llama2cTokenizerTest, SpaceAfterBosIsDroppedOnlyAfterBos) {
  ICAE_REQUIRE_TESTDATA(Tok512Path());
  const Tokenizer& tok = LoadCached(Tok512Path());
  const int32_t once = tok.Encode("Once", false)[0];  // " Once"
  EXPECT_EQ(tok.IdToPiece(once), " Once");
  EXPECT_EQ(*tok.Decode({1, once}), "Once");
  EXPECT_EQ(*tok.Decode({once}), " Once");
  EXPECT_EQ(*tok.Decode({1, 2}), "");  // BOS/EOS print nothing
  IncrementalDecoder after_bos(tok, {1});
  EXPECT_EQ(after_bos.Push(once), "Once");
}

TEST(Llama2cTokenizerTest, RoundTripsCorpusAndUnknownCharacters) {
  ICAE_REQUIRE_TESTDATA(Tok512Path());
  const Tokenizer& tok = LoadCached(Tok512Path());
  std::vector<std::string> texts = {"你好世界 🍕 Ωμέγα", "tab\tand\nnewline", "  ", "x"};
  if (PathExists(SharedDir() + "/corpora/tinystories_sample.txt")) {
    texts.push_back(ReadFile(SharedDir() + "/corpora/tinystories_sample.txt"));
  }
  for (const std::string& text : texts) {
    const auto ids = tok.Encode(text, true);
    EXPECT_EQ(*tok.Decode(ids), text);
    ExpectIncrementalMatchesDecode(tok, ids);
  }
}

// ---------------------------------------------------------------------------------------
// SentencePiece (Mistral v1 tokenizer.model)

TEST(SentencePieceTokenizerTest, MatchesSentencePieceGolden) {
  const std::string golden = TestDataDir() + "/tokenizer_mistral_v1.json";
  ICAE_REQUIRE_TESTDATA(golden);
  ICAE_REQUIRE_TESTDATA(MistralPath());
  const Tokenizer& tok = LoadCached(MistralPath());
  const nlohmann::json j = ReadJson(golden);
  EXPECT_EQ(tok.format(), "sentencepiece-bpe");
  EXPECT_EQ(tok.vocab_size(), j["vocab_size"].get<int>());
  EXPECT_EQ(tok.bos_id(), j["bos_id"].get<int>());
  EXPECT_EQ(tok.eos_id(), j["eos_id"].get<int>());
  EXPECT_EQ(tok.unk_id(), j["unk_id"].get<int>());
  for (const auto& [id, piece] : j["pieces"].items()) {
    EXPECT_EQ(tok.IdToPiece(std::stoi(id)), piece.get<std::string>()) << "id " << id;
    EXPECT_EQ(tok.PieceToId(piece.get<std::string>()), std::stoi(id));
  }
  ASSERT_GE(j["cases"].size(), 50u);
  for (const auto& c : j["cases"]) {
    const std::string text = c["text"];
    const std::vector<int32_t> want = c["ids"];
    EXPECT_THAT(tok.Encode(text, false), ElementsAreArray(want)) << "text: \"" << text << "\"";
    std::vector<int32_t> with_bos = {1};
    with_bos.insert(with_bos.end(), want.begin(), want.end());
    EXPECT_THAT(tok.Encode(text, true), ElementsAreArray(with_bos));
    auto decoded = tok.Decode(want);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(*decoded, c["decoded"].get<std::string>()) << "text: \"" << text << "\"";
    ExpectIncrementalMatchesDecode(tok, want);
  }
}

TEST(SentencePieceTokenizerTest, LoadsFromModelFolder) {
  const std::string dir = TestDataDir() + "/icae-golden/model";
  ICAE_REQUIRE_TESTDATA(dir + "/tokenizer.model");
  auto tok = Tokenizer::LoadFromModelDir(dir);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), 32000);
  EXPECT_THAT((*tok)->Encode("Hello world", true), ElementsAreArray({1, 22557, 1526}));
}

TEST(SentencePieceTokenizerTest, ControlAndUnknownTokensInDecode) {
  ICAE_REQUIRE_TESTDATA(MistralPath());
  const Tokenizer& tok = LoadCached(MistralPath());
  // Control tokens are invisible, and the dummy-prefix space after a leading <s> still goes.
  EXPECT_EQ(*tok.Decode({1, 22557, 1526, 2}), "Hello world");
  EXPECT_EQ(*tok.Decode({1, 2}), "");
  EXPECT_EQ(*tok.Decode({22557, 2, 1526}), "Hello world");
  // <unk> prints SentencePiece's default unk_surface " ⁇ ".
  EXPECT_EQ(*tok.Decode({0}), " \xE2\x81\x87 ");
  // Literal control strings in text are plain text.
  for (const std::string text : {"<s>", "</s>", "<unk>", "a <s> b"}) {
    const auto ids = tok.Encode(text, false);
    for (int32_t id : ids) EXPECT_GT(id, 2) << text;
    EXPECT_EQ(*tok.Decode(ids), text);
  }
}

TEST(SentencePieceTokenizerTest, ByteFallbackAndMalformedUtf8) {
  ICAE_REQUIRE_TESTDATA(MistralPath());
  const Tokenizer& tok = LoadCached(MistralPath());
  // "🍕" is not a piece: "▁" then its four bytes <0xF0><0x9F><0x8D><0x95> (id = byte + 3).
  EXPECT_THAT(tok.Encode("🍕", false), ElementsAreArray({28705, 0xF0 + 3, 0x9F + 3, 0x8D + 3,
                                                          0x95 + 3}));
  // Malformed input bytes become U+FFFD (as SentencePiece's normaliser does), one per byte.
  const auto ids = tok.Encode("a\xFF\xC3z", false);
  EXPECT_EQ(*tok.Decode(ids), "a\xEF\xBF\xBD\xEF\xBF\xBDz");
  // Invalid byte sequences in ids decode to one U+FFFD per bad byte.
  const int32_t a = tok.PieceToId("a");
  ASSERT_GE(a, 0);
  EXPECT_EQ(*tok.Decode({0xE4 + 3, 0xBD + 3, a}), "\xEF\xBF\xBD\xEF\xBF\xBD" "a");
  EXPECT_EQ(*tok.Decode({0x80 + 3}), "\xEF\xBF\xBD");
  EXPECT_EQ(*tok.Decode({0xE4 + 3, 0xBD + 3, 0xA0 + 3}), "你");
  // Overlong / surrogate encodings are invalid.
  EXPECT_EQ(*tok.Decode({0xC0 + 3, 0x80 + 3}), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(*tok.Decode({0xED + 3, 0xA0 + 3, 0x80 + 3}),
            "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST(SentencePieceTokenizerTest, RoundTripsCorpusText) {
  ICAE_REQUIRE_TESTDATA(MistralPath());
  ICAE_REQUIRE_TESTDATA(SharedDir() + "/corpora/wikitext2-valid.txt");
  const Tokenizer& tok = LoadCached(MistralPath());
  for (const char* name : {"wikitext2-valid.txt", "tinyshakespeare.txt"}) {
    const std::string text = CorpusPrefix(name, 20000);
    const auto ids = tok.Encode(text, true);
    EXPECT_EQ(*tok.Decode(ids), text) << name;
    EXPECT_LT(ids.size(), text.size() / 2) << "suspiciously many tokens for " << name;
    // Line by line too (each line gets its own dummy prefix).
    for (absl::string_view line : absl::StrSplit(text.substr(0, 4000), '\n')) {
      const std::string s(line);
      EXPECT_EQ(*tok.Decode(tok.Encode(s, false)), s);
    }
  }
}

TEST(SentencePieceTokenizerTest, DecodeRejectsOutOfRangeIds) {
  ICAE_REQUIRE_TESTDATA(MistralPath());
  const Tokenizer& tok = LoadCached(MistralPath());
  for (int32_t bad : {-1, 32000, 1 << 30}) {
    auto r = tok.Decode({22557, bad});
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(std::to_string(bad)));
  }
  EXPECT_EQ(tok.IdToPiece(-1), "");
  EXPECT_EQ(tok.IdToPiece(32000), "");
  EXPECT_EQ(*tok.Decode({}), "");
  EXPECT_TRUE(tok.Encode("", false).empty());
}

// ---------------------------------------------------------------------------------------
// Small hand-made SentencePiece models (protobuf wire format written by hand), for cases the
// real models do not have.

std::string Varint(uint64_t v) {
  std::string out;
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
  return out;
}
std::string LenField(int num, const std::string& payload) {
  return Varint(static_cast<uint64_t>(num) << 3 | 2) + Varint(payload.size()) + payload;
}
std::string IntField(int num, uint64_t v) { return Varint(static_cast<uint64_t>(num) << 3) + Varint(v); }
std::string FloatField(int num, float f) {
  return Varint(static_cast<uint64_t>(num) << 3 | 5) + std::string(reinterpret_cast<char*>(&f), 4);
}

struct SynthPiece {
  std::string text;
  float score;
  int type;  // 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte
};

std::string SynthModel(const std::vector<SynthPiece>& pieces, const std::string& trainer_extra = "",
                       bool add_dummy_prefix = true, int model_type = 2) {
  std::string out;
  for (const auto& p : pieces) {
    out += LenField(1, LenField(1, p.text) + FloatField(2, p.score) + IntField(3, p.type));
  }
  out += LenField(2, IntField(3, model_type) + trainer_extra);
  out += LenField(3, LenField(1, "identity") + IntField(3, add_dummy_prefix) + IntField(4, 0));
  return out;
}

std::vector<SynthPiece> BasePieces() {
  return {{"<unk>", 0, 2}, {"<s>", 0, 3}, {"</s>", 0, 3}, {"\xE2\x96\x81", -5, 1},
          {"a", -1, 1},    {"b", -1, 1},  {"c", -1, 1}};
}

std::unique_ptr<Tokenizer> MustLoad(const std::string& bytes) {
  auto tok = Tokenizer::FromBytes(bytes, "synthetic");
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? std::move(tok).value() : nullptr;
}

TEST(SyntheticSentencePieceTest, UnusedPiecesAreMergedThroughThenSplitBack) {
  auto pieces = BasePieces();
  pieces.push_back({"ab", 10, 5});   // 7: UNUSED, merged first
  pieces.push_back({"abc", 5, 1});   // 8
  auto tok = MustLoad(SynthModel(pieces));
  ASSERT_NE(tok, nullptr);
  // "abc" is reached through the unused "ab".
  EXPECT_THAT(tok->Encode("abc", false), ElementsAreArray({3, 8}));
  // A final unused "ab" is split back into a + b.
  EXPECT_THAT(tok->Encode("ab", false), ElementsAreArray({3, 4, 5}));
  EXPECT_THAT(tok->Encode("ab abc", true), ElementsAreArray({1, 3, 4, 5, 3, 8}));
  EXPECT_EQ(*tok->Decode(tok->Encode("ab abc", true)), "ab abc");
}

TEST(SyntheticSentencePieceTest, PiecesSpanningASpaceMergeAcrossWords) {
  auto pieces = BasePieces();
  pieces.push_back({"a\xE2\x96\x81", -2, 1});          // 7: "a▁"
  pieces.push_back({"a\xE2\x96\x81" "b", -3, 1});      // 8: "a▁b"
  auto tok = MustLoad(SynthModel(pieces));
  ASSERT_NE(tok, nullptr);
  EXPECT_THAT(tok->Encode("a b", false), ElementsAreArray({3, 8}));
  EXPECT_EQ(*tok->Decode({3, 8}), "a b");
}

TEST(SyntheticSentencePieceTest, NoByteFallbackMergesUnknownRuns) {
  auto tok = MustLoad(SynthModel(BasePieces()));
  ASSERT_NE(tok, nullptr);
  // "xyz" are unknown: one <unk> for the run.
  EXPECT_THAT(tok->Encode("axyzb", false), ElementsAreArray({3, 4, 0, 5}));
  EXPECT_EQ(*tok->Decode({3, 4, 0, 5}), "a \xE2\x81\x87 b");
}

TEST(SyntheticSentencePieceTest, NoDummyPrefixAndNoBosPiece) {
  std::vector<SynthPiece> pieces = {{"<unk>", 0, 2}, {"\xE2\x96\x81", -5, 1}, {"a", -1, 1}};
  auto tok = MustLoad(SynthModel(pieces, "", /*add_dummy_prefix=*/false));
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->bos_id(), -1);
  EXPECT_EQ(tok->eos_id(), -1);
  EXPECT_THAT(tok->Encode("a a", true), ElementsAreArray({2, 1, 2}));
  EXPECT_EQ(*tok->Decode({1, 2}), " a");  // no dummy prefix, so nothing is stripped
}

TEST(SyntheticSentencePieceTest, InvalidModelsAreRejected) {
  auto error_of = [](const std::string& bytes) {
    auto tok = Tokenizer::FromBytes(bytes, "synthetic.model");
    EXPECT_FALSE(tok.ok());
    return tok.ok() ? std::string() : std::string(tok.status().message());
  };
  EXPECT_THAT(error_of(SynthModel(BasePieces(), "", true, /*model_type=*/1)),
              HasSubstr("UNIGRAM is not supported"));
  auto no_unk = BasePieces();
  no_unk[0].type = 1;
  EXPECT_THAT(error_of(SynthModel(no_unk)), HasSubstr("no UNKNOWN piece"));
  auto dup = BasePieces();
  dup.push_back({"a", -9, 1});
  EXPECT_THAT(error_of(SynthModel(dup)), HasSubstr("defined twice"));
  auto empty_piece = BasePieces();
  empty_piece.push_back({"", 0, 1});
  EXPECT_THAT(error_of(SynthModel(empty_piece)), HasSubstr("is empty"));
  // byte_fallback (trainer field 35) without the 256 byte pieces.
  EXPECT_THAT(error_of(SynthModel(BasePieces(), IntField(35, 1))), HasSubstr("<0x00> is missing"));
  auto bad_byte = BasePieces();
  bad_byte.push_back({"<0xZZ>", 0, 6});
  EXPECT_THAT(error_of(SynthModel(bad_byte)), HasSubstr("<0xHH>"));
  // Valid protobuf, but only pieces: the specs are missing.
  EXPECT_THAT(error_of(LenField(1, LenField(1, "<unk>") + IntField(3, 2))),
              HasSubstr("truncated"));
}

// ---------------------------------------------------------------------------------------
// Streaming decode

TEST(IncrementalDecoderTest, HoldsBackSplitCharacters) {
  ICAE_REQUIRE_TESTDATA(MistralPath());
  const Tokenizer& tok = LoadCached(MistralPath());
  // "▁" then the 4 byte tokens of 🍕: nothing comes out until the character is complete.
  IncrementalDecoder dec(tok);
  EXPECT_EQ(dec.Push(28705), "");  // the dummy-prefix space is dropped
  EXPECT_EQ(dec.Push(0xF0 + 3), "");
  EXPECT_EQ(dec.Push(0x9F + 3), "");
  EXPECT_EQ(dec.Push(0x8D + 3), "");
  EXPECT_EQ(dec.Push(0x95 + 3), "🍕");
  EXPECT_EQ(dec.Push(tok.PieceToId("a")), "a");
  // An incomplete character followed by a normal piece: U+FFFD per byte, then the piece.
  EXPECT_EQ(dec.Push(0xE4 + 3), "");
  EXPECT_EQ(dec.Push(0xBD + 3), "");
  EXPECT_EQ(dec.Push(tok.PieceToId("a")), "\xEF\xBF\xBD\xEF\xBF\xBD" "a");
  // ... or followed by the end of the stream.
  EXPECT_EQ(dec.Push(0xE4 + 3), "");
  EXPECT_EQ(dec.Flush(), "\xEF\xBF\xBD");
  // A byte that cannot start a character comes out at once.
  EXPECT_EQ(dec.Push(0xBD + 3), "\xEF\xBF\xBD");
  // Out-of-range ids are skipped.
  EXPECT_EQ(dec.Push(-5), "");
  EXPECT_EQ(dec.Push(1 << 20), "");
}

TEST(IncrementalDecoderTest, MultiByteTextStreamsLikeDecode) {
  ICAE_REQUIRE_TESTDATA(MistralPath());
  const Tokenizer& tok = LoadCached(MistralPath());
  for (const std::string text :
       {"I love pizza 🍕 and 👍🏽!", "我喜欢学习机器学习。東京", "Łódź — “quotes” … €5",
        "🀄🃏🎴 mixed ✓ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢", " leading and trailing ", "\n\n"}) {
    const auto ids = tok.Encode(text, true);
    ExpectIncrementalMatchesDecode(tok, ids);
    EXPECT_EQ(*tok.Decode(ids), text);
  }
}

TEST(IncrementalDecoderTest, RandomIdStreamsMatchDecode) {
  ICAE_REQUIRE_TESTDATA(MistralPath());
  ICAE_REQUIRE_TESTDATA(Tok512Path());
  std::mt19937 rng(1234);
  for (const std::string& path : {MistralPath(), Tok512Path()}) {
    const Tokenizer& tok = LoadCached(path);
    std::uniform_int_distribution<int32_t> any(0, tok.vocab_size() - 1);
    std::uniform_int_distribution<int32_t> byte(3, 258);
    std::uniform_int_distribution<int> pick(0, 9);
    for (int round = 0; round < 300; ++round) {
      std::vector<int32_t> ids(1 + round % 17);
      // Mostly byte tokens, so that valid and broken multi-byte sequences both occur.
      for (auto& id : ids) id = pick(rng) < 7 ? byte(rng) : any(rng);
      ExpectIncrementalMatchesDecode(tok, ids);
    }
  }
}

TEST(IncrementalDecoderTest, ContinuationKeepsLeadingSpace) {
  ICAE_REQUIRE_TESTDATA(MistralPath());
  const Tokenizer& tok = LoadCached(MistralPath());
  const auto ids = tok.Encode("Hello world", true);  // 1 22557 1526
  ASSERT_EQ(ids.size(), 3u);
  IncrementalDecoder cont(tok, {ids[0], ids[1]});
  EXPECT_EQ(cont.Push(ids[2]), " world");
  IncrementalDecoder fresh(tok);
  EXPECT_EQ(fresh.Push(ids[2]), "world");
}

// ---------------------------------------------------------------------------------------
// Corrupt and unusual files: every one gives a clear error naming the file, never a crash.

class BadTokenizerFileTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = MakeTempDir("icae-tok-test"); }
  void TearDown() override { RunCommand("rm -rf " + ShellQuote(dir_), nullptr); }

  // Writes `data` to a file and loads it; returns the error (the load must fail).
  absl::Status LoadError(const std::string& name, const std::string& data) {
    const std::string path = dir_ + "/" + name;
    WriteFile(path, data);
    auto tok = Tokenizer::Load(path);
    EXPECT_FALSE(tok.ok()) << name << " loaded";
    if (tok.ok()) return absl::OkStatus();
    EXPECT_THAT(std::string(tok.status().message()), HasSubstr(path));
    EXPECT_TRUE(tok.status().code() == absl::StatusCode::kInvalidArgument ||
                tok.status().code() == absl::StatusCode::kDataLoss)
        << tok.status();
    return tok.status();
  }

  static std::string I32(int32_t v) { return std::string(reinterpret_cast<char*>(&v), 4); }
  static std::string F32(float v) { return std::string(reinterpret_cast<char*>(&v), 4); }
  static std::string BinToken(const std::string& text, float score = 0) {
    return F32(score) + I32(static_cast<int32_t>(text.size())) + text;
  }
  // A minimal valid llama2.c tokenizer: <unk>, BOS, EOS, 256 byte tokens, a few pieces.
  static std::string MinimalBin() {
    std::string bin = I32(7) + BinToken("<unk>") + BinToken("\n<s>\n") + BinToken("\n</s>\n");
    for (int b = 0; b < 256; ++b) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "<0x%02X>", b);
      bin += BinToken(buf);
    }
    bin += BinToken(" ", 0) + BinToken("a", -1) + BinToken("b", -2) + BinToken("ab", -3) +
           BinToken(" ab", -4);
    return bin;
  }

  std::string dir_;
};

TEST_F(BadTokenizerFileTest, MinimalLlama2cFileWorks) {
  const std::string path = dir_ + "/tokenizer.bin";
  WriteFile(path, MinimalBin());
  auto tok = Tokenizer::LoadFromModelDir(dir_);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->format(), "llama2c");
  EXPECT_EQ((*tok)->vocab_size(), 259 + 5);
  const auto ids = (*tok)->Encode("ab", true);
  EXPECT_THAT(ids, ElementsAreArray({1, 263}));  // BOS, " ab"
  EXPECT_EQ(*(*tok)->Decode(ids), "ab");
  EXPECT_THAT((*tok)->Encode("é", false), ElementsAreArray({259, 0xC3 + 3, 0xA9 + 3}));
}

TEST_F(BadTokenizerFileTest, TruncatedSentencePieceModel) {
  ICAE_REQUIRE_TESTDATA(MistralPath());
  const std::string model = ReadFile(MistralPath());
  for (size_t len : {size_t{1}, size_t{7}, size_t{1000}, model.size() / 2, model.size() - 1}) {
    const absl::Status st = LoadError("tokenizer.model", model.substr(0, len));
    EXPECT_FALSE(st.ok()) << "len " << len;
  }
  // Cut exactly after a complete piece: still valid protobuf, but the specs are missing.
  size_t pos = 0;
  for (int piece = 0; piece < 1000; ++piece) {
    ASSERT_EQ(static_cast<uint8_t>(model[pos]), 0x0A);  // field 1, length-delimited
    size_t len = 0, shift = 0, i = pos + 1;
    while (static_cast<uint8_t>(model[i]) & 0x80) {
      len |= size_t{static_cast<uint8_t>(model[i]) & 0x7Fu} << shift;
      shift += 7;
      ++i;
    }
    len |= size_t{static_cast<uint8_t>(model[i])} << shift;
    pos = i + 1 + len;
  }
  const absl::Status st = LoadError("tokenizer.model", model.substr(0, pos));
  EXPECT_THAT(std::string(st.message()), HasSubstr("truncated"));
}

TEST_F(BadTokenizerFileTest, GarbageAndEmptyFiles) {
  std::mt19937 rng(42);
  std::string garbage(4096, '\0');
  for (char& c : garbage) c = static_cast<char>(rng());
  garbage[0] = '\x91';  // make sure the first bytes look like neither format
  EXPECT_THAT(std::string(LoadError("garbage.model", garbage).message()),
              HasSubstr("not a tokenizer"));
  EXPECT_THAT(std::string(LoadError("empty.model", "").message()), HasSubstr("empty"));
  EXPECT_FALSE(LoadError("text.model", "this is not a tokenizer\n").ok());
}

TEST_F(BadTokenizerFileTest, TruncatedLlama2cBin) {
  const std::string bin = MinimalBin();
  EXPECT_THAT(std::string(LoadError("t1.bin", bin.substr(0, 2)).message()),
              HasSubstr("not a tokenizer"));
  EXPECT_THAT(std::string(LoadError("t2.bin", bin.substr(0, 4 + 6)).message()),
              HasSubstr("truncated"));
  EXPECT_THAT(std::string(LoadError("t3.bin", bin.substr(0, bin.size() - 1)).message()),
              HasSubstr("truncated"));
  if (PathExists(Tok512Path())) {
    const std::string tok512 = ReadFile(Tok512Path());
    EXPECT_THAT(std::string(LoadError("t4.bin", tok512.substr(0, 3000)).message()),
                HasSubstr("truncated"));
  }
}

TEST_F(BadTokenizerFileTest, Llama2cBinWithBadLengths) {
  const std::string head = I32(7) + BinToken("<unk>");
  EXPECT_THAT(std::string(LoadError("neg.bin", head + F32(0) + I32(-5) + "xx").message()),
              HasSubstr("length -5"));
  EXPECT_THAT(std::string(LoadError("huge.bin", head + F32(0) + I32(0x7FFFFFFF)).message()),
              HasSubstr("length 2147483647"));
  // A length within max_token_length but past the end of the file.
  const std::string big_max = I32(60000) + BinToken("<unk>") + F32(0) + I32(50000) + "abc";
  EXPECT_THAT(std::string(LoadError("past_end.bin", big_max).message()),
              HasSubstr("truncated"));
  // A header that is not a plausible max_token_length (negative, zero, huge).
  EXPECT_FALSE(LoadError("hdr_neg.bin", I32(-1) + BinToken("<unk>")).ok());
  EXPECT_FALSE(LoadError("hdr_zero.bin", I32(0) + BinToken("<unk>")).ok());
  // Valid framing but too few tokens for byte fallback.
  EXPECT_THAT(std::string(LoadError("few.bin", head + BinToken("a")).message()),
              HasSubstr("need at least 259"));
}

TEST_F(BadTokenizerFileTest, MissingFilesAndFolders) {
  auto tok = Tokenizer::Load(dir_ + "/nope.model");
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(tok.status().message()), HasSubstr("nope.model"));
  auto from_dir = Tokenizer::LoadFromModelDir(dir_);
  ASSERT_FALSE(from_dir.ok());
  EXPECT_EQ(from_dir.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(from_dir.status().message()), HasSubstr(dir_));
  EXPECT_FALSE(Tokenizer::Load(dir_).ok());  // a folder is not a file
}

TEST_F(BadTokenizerFileTest, RandomCorruptionNeverCrashes) {
  std::vector<std::string> originals = {MinimalBin()};
  if (PathExists(MistralPath())) originals.push_back(ReadFile(MistralPath()));
  if (PathExists(Tok512Path())) originals.push_back(ReadFile(Tok512Path()));
  std::mt19937 rng(7);
  int loaded = 0, rejected = 0;
  for (const std::string& original : originals) {
    for (int round = 0; round < 60; ++round) {
      std::string data = original;
      const int flips = 1 + static_cast<int>(rng() % 8);
      for (int f = 0; f < flips; ++f) {
        // Corrupt mostly the first bytes, where the framing is.
        const size_t at = rng() % 2 ? rng() % std::min<size_t>(data.size(), 64) : rng() % data.size();
        data[at] = static_cast<char>(rng());
      }
      if (rng() % 3 == 0) data.resize(rng() % data.size());
      auto tok = Tokenizer::FromBytes(data, "corrupt-" + std::to_string(round));
      if (!tok.ok()) {
        ++rejected;
        EXPECT_THAT(std::string(tok.status().message()), HasSubstr("corrupt-"));
        continue;
      }
      ++loaded;
      // Whatever loads must still encode and decode without crashing.
      const auto ids = (*tok)->Encode("Hello wörld 🍕 <s>", true);
      for (int32_t id : ids) ASSERT_TRUE((*tok)->IsValidId(id));
      ASSERT_TRUE((*tok)->Decode(ids).ok());
    }
  }
  EXPECT_GT(rejected, 0);
  std::cout << "corrupt files: " << rejected << " rejected, " << loaded << " still loadable\n";
}

// ---------------------------------------------------------------------------------------
// Speed: SentencePiece-style heap merging is O(n log n); llama2.c's rescans are O(n^2).

double EncodeMs(const Tokenizer& tok, const std::string& text, size_t* n_ids = nullptr) {
  const auto start = std::chrono::steady_clock::now();
  const auto ids = tok.Encode(text, true);
  const auto end = std::chrono::steady_clock::now();
  if (n_ids != nullptr) *n_ids = ids.size();
  return std::chrono::duration<double, std::milli>(end - start).count();
}

TEST(TokenizerSpeedTest, HundredKilobytesIsFast) {
  ICAE_REQUIRE_TESTDATA(MistralPath());
  ICAE_REQUIRE_TESTDATA(Tok512Path());
  ICAE_REQUIRE_TESTDATA(SharedDir() + "/corpora/wikitext2-valid.txt");
  const std::string text = CorpusPrefix("wikitext2-valid.txt", 100 * 1024);
  std::mt19937 rng(3);
  std::string random_bytes(100 * 1024, '\0');
  for (char& c : random_bytes) c = static_cast<char>(rng());
  std::string emoji;
  while (emoji.size() < 100 * 1024) emoji += "😀";
  const std::vector<std::pair<std::string, std::string>> inputs = {
      {"wikitext", text},
      {"spaces", std::string(100 * 1024, ' ')},
      {"one letter", std::string(100 * 1024, 'a')},
      {"random bytes", random_bytes},
      {"emoji", emoji}};
  for (const std::string& path : {MistralPath(), Tok512Path()}) {
    const Tokenizer& tok = LoadCached(path);
    for (const auto& [name, input] : inputs) {
      EncodeMs(tok, input);  // warm up
      size_t n = 0;
      const double ms = EncodeMs(tok, input, &n);
      std::cout << tok.format() << " " << name << ": " << input.size() << " bytes -> " << n
                << " ids in " << ms << " ms\n";
      // Generous bound (sanitizer/debug builds); an O(n^2) merge takes seconds here.
      EXPECT_LT(ms, 1000.0) << name;
    }
  }
}

// ---------------------------------------------------------------------------------------
// Cross-check against SentencePiece itself on models we train here with spm_train (default
// nmt_nfkc normalisation with a precompiled charsmap, user-defined symbols, no byte
// fallback...), using the spm_encode / spm_decode tools (never the library).

bool HaveSpmTools() {
  std::string out;
  return RunCommand("command -v spm_train && command -v spm_encode && command -v spm_decode",
                    &out) == 0;
}

// Random text: runs of spaces and tabs, ASCII, Latin, CJK, emoji, combining marks, the
// U+2581 symbol itself, and (unless valid_only) malformed bytes.
std::string RandomText(std::mt19937& rng, bool valid_only) {
  static const char* const kAtoms[] = {
      " ", "  ", "   ", "\t", "a", "e", "th", "the", "ing", "Z", "Q", "0", "7", "42", ".", ",",
      "!", "'", "\"", "-", "_", "<s>", "</s>", "<unk>", "é", "ß", "ø", "Ł", "ñ", "ü", "α", "Ж",
      "東", "京", "は", "カ", "한", "😀", "🍕", "👍🏽", "🀄", "\xE2\x96\x81", "\xCC\x81",
      "\xC2\xA0", "\xE3\x80\x80", "ﬁ", "①", "Ⅻ", "ＡＢ", "\xEF\xBF\xBD", "\r"};
  static const char* const kBad[] = {"\xFF", "\xC3", "\xE4\xBD", "\x80", "\xF0\x9F",
                                     "\xED\xA0\x80", "\xC0\xAF"};
  std::string out;
  const int n = static_cast<int>(rng() % 40);
  for (int i = 0; i < n; ++i) {
    if (!valid_only && rng() % 12 == 0) {
      out += kBad[rng() % (sizeof(kBad) / sizeof(kBad[0]))];
    } else {
      out += kAtoms[rng() % (sizeof(kAtoms) / sizeof(kAtoms[0]))];
    }
  }
  return out;
}

class SpmCrossCheckTest : public ::testing::TestWithParam<std::string> {};

std::string SpmCaseName(const ::testing::TestParamInfo<std::string>& info) {
  static const char* const kNames[] = {"NfkcByteFallback", "NoByteFallback",
                                       "IdentityLikeMistral", "NfkcCfNoDummyPrefix"};
  return kNames[info.index];
}

TEST_P(SpmCrossCheckTest, MatchesSpmEncodeAndDecode) {
  if (!HaveSpmTools()) GTEST_SKIP() << "spm_train/spm_encode/spm_decode not installed";
  ICAE_REQUIRE_TESTDATA(SharedDir() + "/corpora/tinyshakespeare.txt");
  const std::string dir = MakeTempDir("icae-spm");
  const std::string corpus = dir + "/corpus.txt";
  std::string train = CorpusPrefix("tinyshakespeare.txt", 150000);
  // Some non-ASCII text so the alphabet and the NFKC map have work to do.
  train += "\nCafé naïve façade — “quotes” … ＡＢＣ ① ﬁ Ⅻ ｶﾀｶﾅ 東京 😀\n";
  WriteFile(corpus, train);
  std::string out, err;
  const std::string cmd = absl::StrCat(
      "spm_train --input=", corpus, " --model_prefix=", dir, "/m --model_type=bpe ",
      "--vocab_size=800 --num_threads=1 --minloglevel=2 ", GetParam(), " >/dev/null");
  ASSERT_EQ(RunCommand(cmd, &out, &err), 0) << cmd << "\n" << err;

  auto tok = Tokenizer::Load(dir + "/m.model");
  ASSERT_TRUE(tok.ok()) << tok.status();

  std::vector<std::string> lines = {
      "Hello world", "  leading and   inner   spaces  ", "ＦＵＬＬ　ＷＩＤＴＨ　ｔｅｘｔ",
      "ligatures ﬁ ﬂ and ① ② ㍻", "e\xCC\x81 combining", "tab\there", "<sep> user [MASK] x",
      "emoji 😀 and 東京 and ｶﾀｶﾅ", "\xE2\x80\x8B zero width", "a", "▁ literal", "ÀÉÎÕÜ àéîõü",
      "   ", "x\xC2\xA0y", "malformed \xFF\xFE bytes", "Ⅻ ⁵ ½ ™ ℃ ㎏"};
  for (absl::string_view line : absl::StrSplit(CorpusPrefix("tinyshakespeare.txt", 40000), '\n')) {
    lines.emplace_back(line);
  }
  std::mt19937 rng(5);
  for (int i = 0; i < 1000; ++i) lines.push_back(RandomText(rng, /*valid_only=*/i % 2 == 0));
  std::string input;
  for (const auto& l : lines) input += l + "\n";
  WriteFile(dir + "/input.txt", input);
  ASSERT_EQ(RunCommand(absl::StrCat("spm_encode --model=", dir, "/m.model --output_format=id < ",
                                    dir, "/input.txt"),
                       &out, &err),
            0)
      << err;
  std::vector<std::string> want_lines = absl::StrSplit(out, '\n');
  ASSERT_GE(want_lines.size(), lines.size());
  std::string our_ids_file;
  int mismatches = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    const auto ids = (*tok)->Encode(lines[i], false);
    const std::string got = absl::StrJoin(ids, " ");
    if (got != want_lines[i] && ++mismatches <= 10) {
      ADD_FAILURE() << "line " << i << " \"" << lines[i] << "\"\n  ours: " << got
                    << "\n  spm:  " << want_lines[i];
    }
    our_ids_file += got + "\n";
  }
  EXPECT_EQ(mismatches, 0);

  WriteFile(dir + "/ids.txt", our_ids_file);
  ASSERT_EQ(RunCommand(absl::StrCat("spm_decode --model=", dir, "/m.model --input_format=id < ",
                                    dir, "/ids.txt"),
                       &out, &err),
            0)
      << err;
  std::vector<std::string> want_text = absl::StrSplit(out, '\n');
  ASSERT_GE(want_text.size(), lines.size());
  mismatches = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    const auto ids = (*tok)->Encode(lines[i], false);
    const std::string got = *(*tok)->Decode(ids);
    if (got != want_text[i] && ++mismatches <= 10) {
      ADD_FAILURE() << "decode line " << i << "\n  ours: \"" << got << "\"\n  spm:  \""
                    << want_text[i] << "\"";
    }
  }
  EXPECT_EQ(mismatches, 0);
  RunCommand("rm -rf " + ShellQuote(dir), nullptr);
}

// The Mistral tokenizer against SentencePiece itself over whole corpora and random text
// (far more cases than the golden file).
TEST(SpmCrossCheckMistralTest, MatchesSpmEncodeOnCorporaAndRandomText) {
  if (!HaveSpmTools()) GTEST_SKIP() << "spm_encode/spm_decode not installed";
  ICAE_REQUIRE_TESTDATA(MistralPath());
  ICAE_REQUIRE_TESTDATA(SharedDir() + "/corpora/wikitext2-valid.txt");
  const Tokenizer& tok = LoadCached(MistralPath());
  std::vector<std::string> lines;
  for (const char* name : {"wikitext2-valid.txt", "tinyshakespeare.txt"}) {
    for (absl::string_view line : absl::StrSplit(CorpusPrefix(name, 400000), '\n')) {
      lines.emplace_back(line);
    }
  }
  std::mt19937 rng(99);
  for (int i = 0; i < 3000; ++i) lines.push_back(RandomText(rng, /*valid_only=*/i % 2 == 0));
  const std::string dir = MakeTempDir("icae-spm-mistral");
  std::string input;
  for (const auto& l : lines) input += l + "\n";
  WriteFile(dir + "/input.txt", input);
  std::string out, err;
  ASSERT_EQ(RunCommand(absl::StrCat("spm_encode --model=", ShellQuote(MistralPath()),
                                    " --output_format=id < ", dir, "/input.txt"),
                       &out, &err),
            0)
      << err;
  const std::vector<std::string> want = absl::StrSplit(out, '\n');
  ASSERT_GE(want.size(), lines.size());
  int mismatches = 0;
  std::string ids_file;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string got = absl::StrJoin(tok.Encode(lines[i], false), " ");
    if (got != want[i] && ++mismatches <= 10) {
      ADD_FAILURE() << "line " << i << " \"" << lines[i] << "\"\n  ours: " << got
                    << "\n  spm:  " << want[i];
    }
    ids_file += want[i] + "\n";
  }
  EXPECT_EQ(mismatches, 0) << "of " << lines.size() << " lines";

  // Decoding SentencePiece's own ids gives SentencePiece's text.
  WriteFile(dir + "/ids.txt", ids_file);
  ASSERT_EQ(RunCommand(absl::StrCat("spm_decode --model=", ShellQuote(MistralPath()),
                                    " --input_format=id < ", dir, "/ids.txt"),
                       &out, &err),
            0)
      << err;
  const std::vector<std::string> want_text = absl::StrSplit(out, '\n');
  ASSERT_GE(want_text.size(), lines.size());
  mismatches = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    std::vector<int32_t> ids;
    for (absl::string_view t : absl::StrSplit(want[i], ' ', absl::SkipEmpty())) {
      ids.push_back(std::stoi(std::string(t)));
    }
    const std::string got = *tok.Decode(ids);
    if (got != want_text[i] && ++mismatches <= 10) {
      ADD_FAILURE() << "decode line " << i << "\n  ours: \"" << got << "\"\n  spm:  \""
                    << want_text[i] << "\"";
    }
  }
  EXPECT_EQ(mismatches, 0) << "of " << lines.size() << " lines";
  RunCommand("rm -rf " + ShellQuote(dir), nullptr);
}

INSTANTIATE_TEST_SUITE_P(
    Models, SpmCrossCheckTest,
    ::testing::Values(
        // spm_train's defaults: nmt_nfkc charsmap, extra whitespace removed.
        "--byte_fallback=true '--user_defined_symbols=<sep>,[MASK]'",
        // No byte fallback: unknown characters become <unk> (runs merged into one).
        "--character_coverage=0.98 '--user_defined_symbols=<sep>'",
        // Mistral-like: identity normalisation, whitespace kept, split digits.
        "--normalization_rule_name=identity --remove_extra_whitespaces=false "
        "--byte_fallback=true --split_digits=true --allow_whitespace_only_pieces=true",
        // No dummy prefix, NFKC with case folding.
        "--normalization_rule_name=nmt_nfkc_cf --add_dummy_prefix=false"),
    SpmCaseName);

// ---------------------------------------------------------------------------------------
// The `icae tokenize` / `icae detokenize` commands.

class TokenizeCommandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!PathExists(IcaeBinary())) GTEST_SKIP() << "icae tool not built: " << IcaeBinary();
    if (!PathExists(MistralPath())) GTEST_SKIP() << "test data not found: " << MistralPath();
  }
  int Run(const std::string& args, std::string* out, std::string* err) {
    return RunCommand(IcaeBinary() + " " + args, out, err);
  }
};

TEST_F(TokenizeCommandTest, TextBeginningWithDashAndEmptyText) {
  const Tokenizer& tok = LoadCached(MistralPath());
  const std::string model = ShellQuote(MistralPath());
  std::string out, err;
  ASSERT_EQ(Run("tokenize --tokenizer " + model + " -- '-hello --world'", &out, &err), 0) << err;
  EXPECT_EQ(out, absl::StrJoin(tok.Encode("-hello --world", true), " ") + "\n");
  // A single dash is not a flag, even without "--".
  ASSERT_EQ(Run("tokenize --tokenizer " + model + " --no-bos '-x'", &out, &err), 0) << err;
  EXPECT_EQ(out, absl::StrJoin(tok.Encode("-x", false), " ") + "\n");
  // Empty text: just BOS, or an empty line.
  ASSERT_EQ(Run("tokenize --tokenizer " + model + " ''", &out, &err), 0) << err;
  EXPECT_EQ(out, "1\n");
  ASSERT_EQ(Run("tokenize --no-bos --tokenizer " + model + " -- ''", &out, &err), 0) << err;
  EXPECT_EQ(out, "\n");
  // Newlines inside the text.
  ASSERT_EQ(Run("tokenize --tokenizer " + model + " 'a\nb'", &out, &err), 0) << err;
  EXPECT_EQ(out, absl::StrJoin(tok.Encode("a\nb", true), " ") + "\n");
}

TEST_F(TokenizeCommandTest, DetokenizeRoundTrip) {
  const Tokenizer& tok = LoadCached(MistralPath());
  const std::string text = "Grüße, 世界! 😀\nsecond line";
  const std::string ids = absl::StrJoin(tok.Encode(text, true), " ");
  std::string out, err;
  ASSERT_EQ(Run("detokenize --tokenizer " + ShellQuote(MistralPath()) + " -- '" + ids + "'",
                &out, &err),
            0)
      << err;
  EXPECT_EQ(out, text + "\n");
}

TEST_F(TokenizeCommandTest, ErrorsAndUsage) {
  std::string out, err;
  const std::string model = ShellQuote(MistralPath());
  EXPECT_EQ(Run("tokenize --tokenizer /nonexistent/tok.model hi", &out, &err), 1);
  EXPECT_THAT(err, HasSubstr("/nonexistent/tok.model"));
  EXPECT_EQ(Run("tokenize --tokenizer " + model, &out, &err), 2);  // no TEXT
  EXPECT_EQ(Run("tokenize --tokenizer " + model + " a b", &out, &err), 2);  // two TEXTs
  EXPECT_EQ(Run("tokenize hi", &out, &err), 2);                              // no --tokenizer
  EXPECT_EQ(Run("tokenize --bogus --tokenizer " + model + " hi", &out, &err), 2);
  EXPECT_EQ(Run("detokenize --tokenizer " + model + " '1 x 2'", &out, &err), 2);
  EXPECT_EQ(Run("detokenize --tokenizer " + model + " '1 99999'", &out, &err), 1);
  EXPECT_THAT(err, HasSubstr("99999"));
}

}  // namespace
}  // namespace icae
