// What the service life cycle (service_main) and the RPCs both services share need from a
// service's core: its model info, and draining / cancelling / stopping on shutdown. The encoder
// and decoder cores implement it; the cores stay free of gRPC.
#ifndef ICAE_COMMON_SERVER_SERVING_CORE_H_
#define ICAE_COMMON_SERVER_SERVING_CORE_H_

#include <cstdint>

#include "icae/v1/icae.pb.h"

namespace icae::server {

class ServingCore {
 public:
  virtual ~ServingCore() = default;

  virtual icae::v1::ModelInfo Info() const = 0;
  // New work is refused with UNAVAILABLE from now on; queued and running work continues.
  virtual void StartDraining() = 0;
  // Requests queued or running.
  virtual int64_t InFlight() const = 0;
  // Ends the work that is left (the grace period is over): requests answer CANCELLED.
  virtual void CancelAll() = 0;
  // Joins the core's threads; anything still queued is answered UNAVAILABLE.
  virtual void Stop() = 0;
};

}  // namespace icae::server

#endif  // ICAE_COMMON_SERVER_SERVING_CORE_H_
