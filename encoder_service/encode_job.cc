#include "encoder_service/encode_job.h"

#include "common/server/slot_identity.h"
#include "common/util/status_macros.h"

namespace icae::encoder {

absl::StatusOr<EncodeJob> PrepareEncodeJob(const server::ModelBundle& bundle,
                                           const EncoderOptions& options,
                                           int64_t max_context_tokens,
                                           const icae::v1::EncodeRequest& r,
                                           const std::string& tenant) {
  RETURN_IF_ERROR(server::CheckClientText(r.request_id(), "request_id",
                                          static_cast<size_t>(options.max_request_id_bytes)));
  EncodeJob job;
  job.request_id = r.request_id();
  job.tenant = tenant;
  job.return_slots = r.return_slots();
  server::ContextInput context;
  switch (r.context_case()) {
    case icae::v1::EncodeRequest::kText:
      context.text = &r.text();
      break;
    case icae::v1::EncodeRequest::kTokenIds:
      context.ids = absl::MakeConstSpan(r.token_ids().ids().data(), r.token_ids().ids().size());
      break;
    default:
      return absl::InvalidArgumentError("give the context as text or token_ids");
  }
  ASSIGN_OR_RETURN(job.ids, server::ContextIds(bundle, context, max_context_tokens));
  return job;
}

}  // namespace icae::encoder
