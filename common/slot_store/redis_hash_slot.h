// Redis Cluster key → hash slot: CRC16 (XMODEM: polynomial 0x1021, initial value 0, no
// reflection) of the key, modulo 16384. Where the key holds a hash tag — a '{' followed later by
// a '}' with at least one byte between them — only the bytes between the first '{' and the first
// '}' after it are hashed, so "{user1}.a" and "{user1}.b" share a slot. A key prefix such as
// "{tenant}:" therefore puts all of a store's records on one node.
#ifndef ICAE_COMMON_SLOT_STORE_REDIS_HASH_SLOT_H_
#define ICAE_COMMON_SLOT_STORE_REDIS_HASH_SLOT_H_

#include <cstdint>
#include <string_view>

namespace icae::slot_store {

inline constexpr int kRedisClusterSlots = 16384;

uint16_t Crc16Xmodem(std::string_view bytes);
int RedisHashSlot(std::string_view key);

}  // namespace icae::slot_store

#endif  // ICAE_COMMON_SLOT_STORE_REDIS_HASH_SLOT_H_
