// An Encode request validated into a job, apart from the EncoderCore that queues and computes
// it: no threads, no store, no gRPC, so the validation can be linked and fuzzed on its own
// (fuzz/service_request_fuzz.cc). EncoderCore::Prepare is this function with the core's
// options and context bound.
#ifndef ICAE_ENCODER_SERVICE_ENCODE_JOB_H_
#define ICAE_ENCODER_SERVICE_ENCODE_JOB_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/server/model_bundle.h"
#include "icae/v1/icae.pb.h"

namespace icae::encoder {

struct EncoderOptions {
  int64_t max_batch = 8;             // contexts per compression pass
  int64_t max_queue = 64;            // waiting contexts; beyond: RESOURCE_EXHAUSTED
  absl::Duration batch_wait = absl::Milliseconds(5);  // how long a batch waits for company
  int64_t max_context_tokens = 0;    // 0 = the adapter's bound
  int64_t max_segments_per_pass = 16;
  int64_t max_request_id_bytes = server::kMaxRequestIdBytes;
};

struct EncodeJob {
  std::string request_id;
  std::string tenant;
  std::vector<int64_t> ids;
  bool return_slots = false;
  // Polled before computing: a job whose caller is gone is answered CANCELLED, not computed.
  std::function<bool()> is_cancelled;
};

// Request → job: decodes text/ids and checks every bound (INVALID_ARGUMENT naming the field).
// `max_context_tokens` is the bound the compressor enforces (Compressor::max_context_tokens()).
absl::StatusOr<EncodeJob> PrepareEncodeJob(const server::ModelBundle& bundle,
                                           const EncoderOptions& options,
                                           int64_t max_context_tokens,
                                           const icae::v1::EncodeRequest& request,
                                           const std::string& tenant);

}  // namespace icae::encoder

#endif  // ICAE_ENCODER_SERVICE_ENCODE_JOB_H_
