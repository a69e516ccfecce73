#include "common/model/cpu_fused.h"

#include <cmath>
#include <vector>

namespace icae {

bool UseFusedCpuOps(const torch::Tensor& x) {
  return x.device().is_cpu() && x.scalar_type() == torch::kBFloat16 &&
         (c10::InferenceMode::is_enabled() || !torch::GradMode::is_enabled());
}

torch::Tensor FusedRmsNorm(const torch::Tensor& x_in, const torch::Tensor& w_in, double eps) {
  auto x = x_in.contiguous();
  auto w = w_in.contiguous();
  const int64_t n = x.size(0), h = x.size(1);
  auto y = torch::empty_like(x);
  const auto* xp = x.data_ptr<at::BFloat16>();
  const auto* wp = w.data_ptr<at::BFloat16>();
  auto* yp = y.data_ptr<at::BFloat16>();
  for (int64_t r = 0; r < n; ++r) {
    const at::BFloat16* xr = xp + r * h;
    float ss = 0;
    for (int64_t i = 0; i < h; ++i) {
      float v = static_cast<float>(xr[i]);
      ss += v * v;
    }
    const float scale = 1.0f / std::sqrt(ss / static_cast<float>(h) + static_cast<float>(eps));
    at::BFloat16* yr = yp + r * h;
    for (int64_t i = 0; i < h; ++i) {
      at::BFloat16 normed(static_cast<float>(xr[i]) * scale);
      yr[i] = at::BFloat16(static_cast<float>(wp[i]) * static_cast<float>(normed));
    }
  }
  return y;
}

torch::Tensor FusedRope(torch::Tensor x, const torch::Tensor& positions, const torch::Tensor& inv_freq) {
  const int64_t n = x.size(0), heads = x.size(1), d = x.size(2), half = d / 2;
  auto pos = positions.to(torch::kInt64).contiguous();
  auto inv = inv_freq.to(torch::kFloat32).contiguous();
  const int64_t* pp = pos.data_ptr<int64_t>();
  const float* ip = inv.data_ptr<float>();
  auto* base = x.data_ptr<at::BFloat16>();
  const int64_t s0 = x.stride(0), s1 = x.stride(1);
  std::vector<float> cs(half), sn(half);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t j = 0; j < half; ++j) {
      const float a = static_cast<float>(pp[t]) * ip[j];
      // Rounded to bf16 as the tensor version does (cos/sin tables cast to the model dtype).
      cs[j] = static_cast<float>(at::BFloat16(std::cos(a)));
      sn[j] = static_cast<float>(at::BFloat16(std::sin(a)));
    }
    for (int64_t hh = 0; hh < heads; ++hh) {
      at::BFloat16* v = base + t * s0 + hh * s1;
      for (int64_t j = 0; j < half; ++j) {
        const float a = static_cast<float>(v[j]), b = static_cast<float>(v[j + half]);
        v[j] = at::BFloat16(a * cs[j] - b * sn[j]);
        v[j + half] = at::BFloat16(b * cs[j] + a * sn[j]);
      }
    }
  }
  return x;
}

}  // namespace icae
