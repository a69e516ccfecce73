// file:// store: atomic writes, restarts, several processes, LRU by access, corruption.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/slot_store/file_store.h"
#include "common/slot_store/slot_store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"
#include "tests/unit/slot_store_testing.h"

namespace icae::slot_store {
namespace {

using ::icae::slot_store::testing::RecordBytesOfSize;
using ::testing::HasSubstr;

constexpr size_t kRecord = 1000;

class SlotStoreFile : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = icae::testing::MakeTempDir("icae-file-store"); }
  void TearDown() override {
    std::string out;
    icae::testing::RunCommand("rm -rf '" + dir_ + "'", &out);
  }
  std::unique_ptr<FileSlotStore> Open(uint64_t max_bytes = 1 << 20) {
    FileStoreOptions o;
    o.dir = dir_;
    o.max_bytes = max_bytes;
    auto store = FileSlotStore::Open(o);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }
  std::string ReadFile(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  void WriteFile(const std::string& path, const std::string& bytes) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  }
  std::string dir_;
};

TEST_F(SlotStoreFile, RoundTripAndSurvivesRestart) {
  const std::string bytes = RecordBytesOfSize(kRecord, 9);
  {
    auto store = Open();
    ASSERT_TRUE(store->Put("abc", bytes).ok());
    auto got = store->Get("abc");
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(**got, bytes);
  }
  auto reopened = Open();  // a new process would see the same
  EXPECT_EQ(reopened->Stats().entries, 1);
  EXPECT_EQ(reopened->Stats().bytes, static_cast<int64_t>(kRecord));
  auto got = reopened->Get("abc");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(**got, bytes);
  EXPECT_EQ(reopened->Get("nope").status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(reopened->Delete("abc").ok());
  EXPECT_FALSE(icae::testing::PathExists(dir_ + "/abc.slot"));
  EXPECT_TRUE(reopened->Delete("abc").ok());
}

TEST_F(SlotStoreFile, OpenedFromUriCreatesFolder) {
  const std::string sub = dir_ + "/nested/cache";
  auto store = OpenSlotStore("file://" + sub + "/?max_bytes=64K&ttl=0");
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE((*store)->Put("x", RecordBytesOfSize(kRecord)).ok());
  EXPECT_TRUE(icae::testing::PathExists(sub + "/x.slot"));
  EXPECT_THAT((*store)->Describe(), HasSubstr(sub));
}

TEST_F(SlotStoreFile, LruByAccessTimeWithinByteBound) {
  // low_watermark 1: trim exactly to max_bytes, so the order is easy to check.
  FileStoreOptions o;
  o.dir = dir_;
  o.max_bytes = 3 * kRecord;
  o.low_watermark = 1.0;
  auto store = *FileSlotStore::Open(o);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(store->Put(absl::StrCat("r", i), RecordBytesOfSize(kRecord, i)).ok());
  }
  EXPECT_EQ(store->Stats().bytes, static_cast<int64_t>(3 * kRecord));  // at the bound
  EXPECT_EQ(store->Stats().evictions, 0);
  ASSERT_TRUE(store->Get("r0").ok());  // r1 is now least recently used
  ASSERT_TRUE(store->Put("r3", RecordBytesOfSize(kRecord, 3)).ok());
  EXPECT_FALSE(*store->Contains("r1"));
  for (const char* id : {"r0", "r2", "r3"}) EXPECT_TRUE(*store->Contains(id)) << id;
  EXPECT_EQ(store->Stats().evictions, 1);
  EXPECT_EQ(store->Stats().bytes, static_cast<int64_t>(3 * kRecord));
}

TEST_F(SlotStoreFile, LowWatermarkTrimsBelowTheBound) {
  auto store = Open(10 * kRecord);  // default low watermark 0.9
  for (int i = 0; i < 11; ++i) {
    ASSERT_TRUE(store->Put(absl::StrCat("r", i), RecordBytesOfSize(kRecord, i)).ok());
  }
  ASSERT_TRUE(store->Trim().ok());
  EXPECT_LE(store->Stats().bytes, static_cast<int64_t>(9 * kRecord));
  EXPECT_TRUE(*store->Contains("r10")) << "the newest record is never the one evicted";
}

TEST_F(SlotStoreFile, RecordAtAndPastBounds) {
  FileStoreOptions o;
  o.dir = dir_;
  o.max_bytes = 4 * kRecord;
  o.max_record_bytes = 2 * kRecord;
  auto store = *FileSlotStore::Open(o);
  EXPECT_TRUE(store->Put("at", RecordBytesOfSize(2 * kRecord)).ok());
  auto past = store->Put("past", RecordBytesOfSize(2 * kRecord + 2));
  EXPECT_EQ(past.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(past.message(), HasSubstr("max_record_bytes"));
  o.max_record_bytes = 100 * kRecord;
  auto store2 = *FileSlotStore::Open(o);
  auto over = store2->Put("over", RecordBytesOfSize(4 * kRecord + 2));
  EXPECT_EQ(over.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(over.message(), HasSubstr("max_bytes"));
  EXPECT_FALSE(icae::testing::PathExists(dir_ + "/over.slot"));
}

TEST_F(SlotStoreFile, CorruptFileIsDataLossAndRemoved) {
  auto store = Open();
  ASSERT_TRUE(store->Put("bad", RecordBytesOfSize(kRecord)).ok());
  const std::string path = dir_ + "/bad.slot";
  std::string bytes = ReadFile(path);
  bytes[bytes.size() / 2] ^= 0x10;  // one flipped bit in the payload
  WriteFile(path, bytes);
  auto got = store->Get("bad");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(got.status().message(), HasSubstr("checksum"));
  EXPECT_FALSE(icae::testing::PathExists(path));
  EXPECT_EQ(store->Get("bad").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store->Stats().corrupt, 1);
}

TEST_F(SlotStoreFile, TruncatedOrForeignFileIsDataLoss) {
  auto store = Open();
  ASSERT_TRUE(store->Put("t", RecordBytesOfSize(kRecord)).ok());
  const std::string path = dir_ + "/t.slot";
  // A torn write, as a crash without fsync could leave under the final name.
  ASSERT_EQ(::truncate(path.c_str(), 600), 0);
  EXPECT_EQ(store->Get("t").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_FALSE(icae::testing::PathExists(path));
  WriteFile(dir_ + "/u.slot", "hello");
  EXPECT_EQ(store->Get("u").status().code(), absl::StatusCode::kDataLoss);
  WriteFile(dir_ + "/v.slot", std::string(4000, 'x'));
  EXPECT_EQ(store->Get("v").status().code(), absl::StatusCode::kDataLoss);
  WriteFile(dir_ + "/w.slot", "");
  EXPECT_EQ(store->Get("w").status().code(), absl::StatusCode::kDataLoss);
}

// A FIFO, a symlink or a folder in place of <id>.slot: Contains says absent and Get says
// DATA_LOSS, both at once (a FIFO used to block open() until someone wrote to it), and a Put
// then replaces the thing with a real record.
TEST_F(SlotStoreFile, NonRegularFilesNeverBlockAndAreReplaced) {
  auto store = Open();
  const std::string fifo = dir_ + "/fifo.slot";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0644), 0);
  const std::string target = dir_ + "/../outside-record";
  WriteFile(target, RecordBytesOfSize(kRecord));
  ASSERT_EQ(::symlink(target.c_str(), (dir_ + "/link.slot").c_str()), 0);
  ASSERT_EQ(::mkdir((dir_ + "/dir.slot").c_str(), 0755), 0);
  // Runs `f` on another thread; if it blocks, a writer opens the FIFO to free it and the
  // test fails instead of hanging.
  auto within_a_second = [&](std::function<void()> f) {
    std::atomic<bool> done{false};
    std::thread t([&] {
      f();
      done = true;
    });
    for (int i = 0; i < 100 && !done; ++i) absl::SleepFor(absl::Milliseconds(10));
    EXPECT_TRUE(done.load()) << "blocked on a non-regular file";
    if (!done) {
      int w = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK);
      if (w >= 0) ::close(w);
    }
    t.join();
  };
  for (const char* id : {"fifo", "link", "dir"}) {
    within_a_second([&] {
      auto has = store->Contains(id);
      ASSERT_TRUE(has.ok()) << id << ": " << has.status();
      EXPECT_FALSE(*has) << id;
    });
    within_a_second([&] {
      auto got = store->Get(id);
      EXPECT_EQ(got.status().code(), absl::StatusCode::kDataLoss) << id << ": " << got.status();
      EXPECT_THAT(got.status().message(), HasSubstr("not a regular file"));
    });
  }
  EXPECT_FALSE(icae::testing::PathExists(fifo));
  EXPECT_TRUE(icae::testing::PathExists(target));  // the link went, not what it pointed to
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0644), 0);
  const std::string bytes = RecordBytesOfSize(kRecord, 3);
  ASSERT_TRUE(store->Put("fifo", bytes).ok());
  auto got = store->Get("fifo");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(**got, bytes);
}

// The folder gone (or replaced by a file) is a store that is down: UNAVAILABLE for every
// operation, not NOT_FOUND (which sends clients to re-encode), and no server path in the message.
TEST_F(SlotStoreFile, MissingFolderIsUnavailableWithoutItsPath) {
  auto store = Open();
  ASSERT_TRUE(store->Put("kept", RecordBytesOfSize(kRecord)).ok());
  std::string out;
  for (bool replace_with_file : {false, true}) {
    icae::testing::RunCommand("rm -rf '" + dir_ + "'", &out);
    if (replace_with_file) WriteFile(dir_, "not a folder");
    auto check = [&](const absl::Status& st, const char* op) {
      EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable) << op << ": " << st;
      EXPECT_EQ(st.message().find(dir_), absl::string_view::npos) << op << ": " << st;
      EXPECT_THAT(st.message(), HasSubstr("file slot store"));
    };
    check(store->Get("kept").status(), "Get");
    check(store->Contains("kept").status(), "Contains");
    check(store->Put("new", RecordBytesOfSize(kRecord)), "Put");
  }
  icae::testing::RunCommand("rm -f '" + dir_ + "'", &out);
}

TEST_F(SlotStoreFile, HalfWrittenTempFileIsNeverServed) {
  auto store = Open();
  const std::string full = RecordBytesOfSize(kRecord);
  // A writer that died mid-write leaves only its temp file.
  WriteFile(dir_ + "/.tmp-999999-0-half", full.substr(0, 300));
  EXPECT_EQ(store->Get("half").status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(*store->Contains("half"));
  ASSERT_TRUE(store->Trim().ok());  // young temp files are left alone (could be in progress)
  EXPECT_TRUE(icae::testing::PathExists(dir_ + "/.tmp-999999-0-half"));
  FileStoreOptions o;
  o.dir = dir_;
  o.stale_temp_age = absl::ZeroDuration();
  absl::SleepFor(absl::Milliseconds(5));
  ASSERT_TRUE(FileSlotStore::Open(o).ok());
  EXPECT_FALSE(icae::testing::PathExists(dir_ + "/.tmp-999999-0-half"));
}

TEST_F(SlotStoreFile, TtlExpiry) {
  auto store = Open();
  const absl::Time put_at = absl::Now();
  ASSERT_TRUE(store->Put("short", RecordBytesOfSize(kRecord), absl::Milliseconds(150)).ok());
  ASSERT_TRUE(store->Put("long", RecordBytesOfSize(kRecord), absl::Seconds(60)).ok());
  const bool early = *store->Contains("short");
  if (absl::Now() - put_at < absl::Milliseconds(140)) {
    EXPECT_TRUE(early);
  }
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_FALSE(*store->Contains("short"));
  EXPECT_EQ(store->Get("short").status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(icae::testing::PathExists(dir_ + "/short.slot"));
  EXPECT_TRUE(store->Get("long").ok());
  EXPECT_EQ(store->Stats().expirations, 1);
  // Another process reading the folder honours the same expiry.
  auto other = Open();
  EXPECT_TRUE(other->Get("long").ok());
}

TEST_F(SlotStoreFile, TwoProcessesShareTheFolder) {
  auto store = Open(64 << 20);
  ASSERT_TRUE(store->Put("from-parent", RecordBytesOfSize(kRecord, 1)).ok());
  // The child is a separate process with its own store object on the same folder; it reads the
  // parent's record and writes 100 records while the parent writes 100 of its own.
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    int code = 0;
    FileStoreOptions o;
    o.dir = dir_;
    o.max_bytes = 64 << 20;
    auto mine = FileSlotStore::Open(o);
    if (!mine.ok() || !(*mine)->Get("from-parent").ok()) code = 1;
    for (int i = 0; i < 100 && code == 0; ++i) {
      if (!(*mine)->Put(absl::StrCat("c", i), RecordBytesOfSize(kRecord, 1000 + i)).ok()) code = 2;
    }
    ::_exit(code);
  }
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(store->Put(absl::StrCat("p", i), RecordBytesOfSize(kRecord, 2000 + i)).ok());
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0) << "child failed (1: read, 2: write)";
  for (int i = 0; i < 100; ++i) {
    auto got = store->Get(absl::StrCat("c", i));
    ASSERT_TRUE(got.ok()) << i << ": " << got.status();
    EXPECT_EQ(**got, RecordBytesOfSize(kRecord, 1000 + i));
  }
  ASSERT_TRUE(store->Trim().ok());
  EXPECT_EQ(store->Stats().entries, 201);
}

TEST_F(SlotStoreFile, ConcurrentWritersOfOneIdNeverExposeAPartialRecord) {
  // Readers race writers replacing the same id with records of other sizes: every read is a
  // whole record or NOT_FOUND, never a mix.
  auto store = Open(64 << 20);
  const std::string small = RecordBytesOfSize(kRecord, 1), large = RecordBytesOfSize(64 * kRecord, 2);
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (int i = 0; i < 300; ++i) {
      ASSERT_TRUE(store->Put("same", i % 2 ? small : large).ok());
    }
    stop = true;
  });
  int reads = 0;
  while (!stop) {
    auto got = store->Get("same");
    if (got.ok()) {
      ASSERT_TRUE(**got == small || **got == large);
      ++reads;
    } else {
      ASSERT_EQ(got.status().code(), absl::StatusCode::kNotFound) << got.status();
    }
  }
  writer.join();
  EXPECT_GT(reads, 0);
}

}  // namespace
}  // namespace icae::slot_store
