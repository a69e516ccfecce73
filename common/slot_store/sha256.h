// Incremental SHA-256 (OpenSSL EVP underneath) for slot IDs and weight fingerprints.
#ifndef ICAE_COMMON_SLOT_STORE_SHA256_H_
#define ICAE_COMMON_SLOT_STORE_SHA256_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

struct evp_md_ctx_st;

namespace icae::slot_store {

class Sha256 {
 public:
  using Digest = std::array<uint8_t, 32>;

  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(const void* data, size_t n);
  void Update(std::string_view data) { Update(data.data(), data.size()); }
  // Little-endian fixed-width integers, so encodings do not depend on the host.
  void UpdateU32(uint32_t v);
  void UpdateU64(uint64_t v);
  // Length-prefixed bytes (u64 length, then the bytes): concatenations stay unambiguous.
  void UpdateField(std::string_view data);

  // Finishes the hash; the object must not be used afterwards.
  Digest Finish();
  std::string FinishHex() { return ToHex(Finish()); }

  static std::string ToHex(const Digest& digest);

 private:
  evp_md_ctx_st* ctx_;  // OpenSSL's EVP_MD_CTX, forward-declared to keep OpenSSL out of users
};

// SHA-256 of `data` as 64 lowercase hex characters.
std::string Sha256Hex(std::string_view data);

}  // namespace icae::slot_store

#endif  // ICAE_COMMON_SLOT_STORE_SHA256_H_
