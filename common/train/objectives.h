// Training losses as sums over target tokens (see trainer.h), on packed batches through the
// same Transformer::Forward that serves (cache = nullptr, autograd on).
#ifndef ICAE_COMMON_TRAIN_OBJECTIVES_H_
#define ICAE_COMMON_TRAIN_OBJECTIVES_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "common/icae/adapter.h"
#include "common/model/transformer.h"
#include "common/train/trainer.h"

namespace icae::train {

// Causal LM: every sequence predicts its own next tokens (ids[1:] from ids[:-1]).
absl::StatusOr<LossSum> LmLossSum(const Transformer& model,
                                  const std::vector<std::vector<int64_t>>& sequences);

enum class IcaeObjective { kAutoencode, kContinue, kInstruct };

// One ICAE example. The encoder compresses `context` (BOS included by the caller) with LoRA
// on; the decoder (LoRA off) reads the mode's template around the slots and is trained to
// produce `target`:
//   kAutoencode  [slots][AE]                          → target = context without BOS + EOS
//   kContinue    [slots](+[LM])                       → target = the following text
//   kInstruct    prefix ; slots ; [FT] ; prompt ; suffix → target = answer + EOS
struct IcaeExample {
  IcaeObjective objective = IcaeObjective::kAutoencode;
  std::vector<int64_t> context;
  std::vector<int64_t> prompt;  // kInstruct only
  std::vector<int64_t> target;
  // The decoder's inputs after the template (teacher forcing feeds target[0..n-2]). Empty: the
  // target itself. Otherwise n-1 ids, e.g. the target with some ids replaced (noisy teacher
  // forcing, so the decoder learns to find its place in the slots after a wrong token).
  std::vector<int64_t> target_input;
};

// Compresses all contexts in one packed encoder pass and decodes all examples in one packed
// decoder pass; returns the summed cross-entropy over every target token.
absl::StatusOr<LossSum> IcaeLossSum(const Transformer& model, const IcaeAdapter& adapter,
                                    const std::vector<IcaeExample>& examples);

// Greedy predictions under teacher forcing, no gradient: per example, the argmax over the base
// vocabulary at every target position (prediction k is the decoder's guess for target[k] given
// the template and target_input[0..k-1]). Scheduled sampling feeds some of them back as inputs.
absl::StatusOr<std::vector<std::vector<int64_t>>> IcaePredictions(const Transformer& model,
                                                                  const IcaeAdapter& adapter,
                                                                  const std::vector<IcaeExample>& examples);

// A fresh adapter for `base`: LoRA A ~ U(±1/sqrt(hidden)) (PEFT's Kaiming init), B = 0 so
// training starts from the base model; memory embeddings drawn at the scale of the base
// model's token embeddings. float32, ready to train.
IcaeAdapter NewIcaeAdapter(const Transformer& base, const IcaeConfig& config, uint64_t seed);

// The adapter's trainable tensors under their released-layout names.
NamedTensors AdapterParameters(IcaeAdapter& adapter);
// The base model's tensors (stacked names: the training checkpoint's view, not HF's).
NamedTensors ModelParameters(Transformer& model);

// Writes a (possibly still training) adapter in the released layout + icae_config.json.
absl::Status SaveTrainedAdapter(const IcaeAdapter& adapter, const std::string& path);

}  // namespace icae::train

#endif  // ICAE_COMMON_TRAIN_OBJECTIVES_H_
