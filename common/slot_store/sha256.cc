#include "common/slot_store/sha256.h"

#include <openssl/evp.h>

#include "glog/logging.h"

namespace icae::slot_store {

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  // Only allocation failure can make these fail; there is nothing sensible to return then.
  CHECK(ctx_ != nullptr && EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) == 1)
      << "OpenSSL SHA-256 initialisation failed";
}

Sha256::~Sha256() { EVP_MD_CTX_free(ctx_); }

void Sha256::Update(const void* data, size_t n) {
  if (n > 0) CHECK_EQ(EVP_DigestUpdate(ctx_, data, n), 1);
}

void Sha256::UpdateU32(uint32_t v) {
  uint8_t b[4];
  for (int i = 0; i < 4; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
  Update(b, sizeof b);
}

void Sha256::UpdateU64(uint64_t v) {
  uint8_t b[8];
  for (int i = 0; i < 8; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
  Update(b, sizeof b);
}

void Sha256::UpdateField(std::string_view data) {
  UpdateU64(data.size());
  Update(data);
}

Sha256::Digest Sha256::Finish() {
  Digest d{};
  unsigned int len = 0;
  CHECK_EQ(EVP_DigestFinal_ex(ctx_, d.data(), &len), 1);
  CHECK_EQ(len, d.size());
  return d;
}

std::string Sha256::ToHex(const Digest& digest) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(64, '0');
  for (size_t i = 0; i < digest.size(); ++i) {
    out[2 * i] = kHex[digest[i] >> 4];
    out[2 * i + 1] = kHex[digest[i] & 15];
  }
  return out;
}

std::string Sha256Hex(std::string_view data) {
  Sha256 h;
  h.Update(data);
  return h.FinishHex();
}

}  // namespace icae::slot_store
