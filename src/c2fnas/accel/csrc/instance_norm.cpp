// Instance norm (optionally followed by a ReLU) of a channels_last_3d CPU tensor, forward and
// backward, each in two passes over the data.
//
// A (N, C, D, H, W) tensor in channels_last_3d is, in memory, N samples of S = D*H*W rows of C
// contiguous channels. Statistics are per (sample, channel) over the S rows. The rows are cut
// into blocks; the threads share out (sample, block) pairs. A block's mean and sum of squared
// deviations are exact two-pass sums over rows that stay in cache, merged per sample in double
// precision (Chan et al.'s pairwise update), so large means do not cancel the variance away.
//
// The ReLU is fused: the backward pass recomputes each pre-ReLU value from the saved input in
// the same float arithmetic as the forward, so it needs no saved output.
//
// float and bfloat16 inputs; weights, biases and statistics are float.

#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace {

constexpr int64_t kBlockRows = 128;

// Elements are float or bfloat16; bfloat16 is handled as its bits (uint16_t), which the
// compiler vectorizes, where it does not vectorize loops over at::BFloat16 structs.
using Bits = uint16_t;

inline float load(float value) { return value; }

inline float load(Bits value) {
  const uint32_t bits = static_cast<uint32_t>(value) << 16;
  float result;
  std::memcpy(&result, &bits, sizeof(result));
  return result;
}

inline void store(float* out, float value) { *out = value; }

// Round to nearest even, as PyTorch converts float to bfloat16; NaN stays NaN.
inline void store(Bits* out, float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  *out = static_cast<Bits>(value != value ? 0x7FC0u : rounded);
}

// Typed pointers to a tensor's elements: float, or bfloat16 as Bits.
template <typename T>
const T* elements(const at::Tensor& tensor) {
  return static_cast<const T*>(tensor.const_data_ptr());
}

template <typename T>
T* mutable_elements(at::Tensor& tensor) {
  return static_cast<T*>(tensor.data_ptr());
}

struct Layout {
  int64_t samples, rows, channels, blocks;
  explicit Layout(const at::Tensor& x)
      : samples(x.size(0)),
        rows(x.numel() / std::max<int64_t>(x.size(0) * x.size(1), 1)),
        channels(x.size(1)),
        blocks((rows + kBlockRows - 1) / kBlockRows) {}
  int64_t block_begin(int64_t block) const { return block * kBlockRows; }
  int64_t block_end(int64_t block) const { return std::min(rows, (block + 1) * kBlockRows); }
};

// Calls body(sample, block, task) for every (sample, block) pair, task = sample * blocks + block;
// the threads share the pairs out.
template <typename Body>
void for_each_block(const Layout& layout, const Body& body) {
  at::parallel_for(0, layout.samples * layout.blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task)
      body(task / layout.blocks, task % layout.blocks, task);
  });
}

// Per-(sample, channel) mean and 1 / sqrt(biased variance + eps).
template <typename T>
void statistics(const T* __restrict__ x, const Layout& layout, double eps, float* mean,
                float* invstd) {
  const int64_t C = layout.channels;
  std::vector<float> block_mean(layout.samples * layout.blocks * C);
  std::vector<float> block_m2(block_mean.size());
  for_each_block(layout, [&](int64_t sample, int64_t block, int64_t task) {
    const int64_t first = layout.block_begin(block), last = layout.block_end(block);
    const T* __restrict__ rows = x + (sample * layout.rows) * C;
    float* __restrict__ m = block_mean.data() + task * C;
    float* __restrict__ m2 = block_m2.data() + task * C;
    std::fill(m, m + C, 0.f);
    std::fill(m2, m2 + C, 0.f);
    for (int64_t row = first; row < last; ++row) {
      const T* __restrict__ values = rows + row * C;
      for (int64_t c = 0; c < C; ++c) m[c] += load(values[c]);
    }
    const float scale = 1.f / static_cast<float>(last - first);
    for (int64_t c = 0; c < C; ++c) m[c] *= scale;
    for (int64_t row = first; row < last; ++row) {
      const T* __restrict__ values = rows + row * C;
      for (int64_t c = 0; c < C; ++c) {
        const float d = load(values[c]) - m[c];
        m2[c] += d * d;
      }
    }
  });
  at::parallel_for(0, layout.samples, 1, [&](int64_t begin, int64_t end) {
    std::vector<double> total_mean(C), total_m2(C);
    for (int64_t sample = begin; sample < end; ++sample) {
      std::fill(total_mean.begin(), total_mean.end(), 0.0);
      std::fill(total_m2.begin(), total_m2.end(), 0.0);
      double count = 0.0;
      for (int64_t block = 0; block < layout.blocks; ++block) {
        const int64_t task = sample * layout.blocks + block;
        const double n = static_cast<double>(layout.block_end(block) - layout.block_begin(block));
        const double merged = count + n;
        for (int64_t c = 0; c < C; ++c) {
          const double delta = block_mean[task * C + c] - total_mean[c];
          total_mean[c] += delta * n / merged;
          total_m2[c] += block_m2[task * C + c] + delta * delta * count * n / merged;
        }
        count = merged;
      }
      for (int64_t c = 0; c < C; ++c) {
        mean[sample * C + c] = static_cast<float>(total_mean[c]);
        invstd[sample * C + c] = static_cast<float>(1.0 / std::sqrt(total_m2[c] / count + eps));
      }
    }
  });
}

// Per (sample, channel): the forward's y = max(x * scale + shift, 0 if relu).
struct Affine {
  std::vector<float> scale, shift;
  Affine(const Layout& layout, const float* weight, const float* bias, const float* mean,
         const float* invstd)
      : scale(layout.samples * layout.channels), shift(scale.size()) {
    for (size_t i = 0; i < scale.size(); ++i) {
      scale[i] = invstd[i] * weight[i % layout.channels];
      shift[i] = bias[i % layout.channels] - mean[i] * scale[i];
    }
  }
};

// The gradient behind the ReLU: zero where the forward's pre-ReLU value was not positive.
template <bool Relu>
inline float gated(float grad, float value, float scale, float shift) {
  if constexpr (Relu) return value * scale + shift > 0.f ? grad : 0.f;
  return grad;
}

template <typename T, bool Relu>
void normalize(const T* __restrict__ x, T* __restrict__ y, const Layout& layout,
               const Affine& affine) {
  const int64_t C = layout.channels;
  const float floor = Relu ? 0.f : -INFINITY;
  for_each_block(layout, [&](int64_t sample, int64_t block, int64_t) {
    const float* __restrict__ a = affine.scale.data() + sample * C;
    const float* __restrict__ b = affine.shift.data() + sample * C;
    for (int64_t row = layout.block_begin(block); row < layout.block_end(block); ++row) {
      const T* __restrict__ in = x + (sample * layout.rows + row) * C;
      T* __restrict__ out = y + (sample * layout.rows + row) * C;
      for (int64_t c = 0; c < C; ++c) store(out + c, std::max(load(in[c]) * a[c] + b[c], floor));
    }
  });
}

template <typename T, bool Relu>
void backward(const T* __restrict__ grad, const T* __restrict__ x, T* __restrict__ grad_x,
              const Layout& layout, const Affine& affine, const float* weight, const float* mean,
              const float* invstd, float* grad_weight, float* grad_bias) {
  const int64_t C = layout.channels;
  // Pass 1: per block, the sums of g and of g * (x - mean), g the gradient behind the ReLU.
  std::vector<float> block_g(layout.samples * layout.blocks * C);
  std::vector<float> block_gx(block_g.size());
  for_each_block(layout, [&](int64_t sample, int64_t block, int64_t task) {
    const float* __restrict__ a = affine.scale.data() + sample * C;
    const float* __restrict__ b = affine.shift.data() + sample * C;
    const float* __restrict__ m = mean + sample * C;
    float* __restrict__ sum_g = block_g.data() + task * C;
    float* __restrict__ sum_gx = block_gx.data() + task * C;
    std::fill(sum_g, sum_g + C, 0.f);
    std::fill(sum_gx, sum_gx + C, 0.f);
    for (int64_t row = layout.block_begin(block); row < layout.block_end(block); ++row) {
      const T* __restrict__ in = x + (sample * layout.rows + row) * C;
      const T* __restrict__ up = grad + (sample * layout.rows + row) * C;
      #pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        const float value = load(in[c]);
        const float g = gated<Relu>(load(up[c]), value, a[c], b[c]);
        sum_g[c] += g;
        sum_gx[c] += g * (value - m[c]);
      }
    }
  });
  // Per (sample, channel): grad_x = g * A + x * B + D; the weight and bias gradients.
  std::vector<float> coef_a(layout.samples * C), coef_b(coef_a.size()), coef_d(coef_a.size());
  std::fill(grad_weight, grad_weight + C, 0.f);
  std::fill(grad_bias, grad_bias + C, 0.f);
  const double rows = static_cast<double>(layout.rows);
  for (int64_t sample = 0; sample < layout.samples; ++sample) {
    for (int64_t c = 0; c < C; ++c) {
      double sum_g = 0.0, sum_gx = 0.0;
      for (int64_t block = 0; block < layout.blocks; ++block) {
        const int64_t task = sample * layout.blocks + block;
        sum_g += block_g[task * C + c];
        sum_gx += block_gx[task * C + c];
      }
      const int64_t i = sample * C + c;
      const double s = invstd[i];
      grad_bias[c] += static_cast<float>(sum_g);
      grad_weight[c] += static_cast<float>(sum_gx * s);
      const double a = weight[c] * s;
      const double b = -a * s * s * sum_gx / rows;
      coef_a[i] = static_cast<float>(a);
      coef_b[i] = static_cast<float>(b);
      coef_d[i] = static_cast<float>(-a * sum_g / rows - b * mean[i]);
    }
  }
  // Pass 2: the input gradient.
  for_each_block(layout, [&](int64_t sample, int64_t block, int64_t) {
    const float* __restrict__ a = affine.scale.data() + sample * C;
    const float* __restrict__ b = affine.shift.data() + sample * C;
    const float* __restrict__ ca = coef_a.data() + sample * C;
    const float* __restrict__ cb = coef_b.data() + sample * C;
    const float* __restrict__ cd = coef_d.data() + sample * C;
    for (int64_t row = layout.block_begin(block); row < layout.block_end(block); ++row) {
      const int64_t offset = (sample * layout.rows + row) * C;
      const T* __restrict__ in = x + offset;
      const T* __restrict__ up = grad + offset;
      T* __restrict__ out = grad_x + offset;
      #pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        const float value = load(in[c]);
        const float g = gated<Relu>(load(up[c]), value, a[c], b[c]);
        store(out + c, g * ca[c] + value * cb[c] + cd[c]);
      }
    }
  });
}

// Calls body(T{}, std::bool_constant<relu>{}) for the input's element type T.
template <typename Body>
void dispatch(at::ScalarType type, bool relu, const Body& body) {
  auto with_type = [&](auto tag) {
    if (relu) body(tag, std::true_type{});
    else body(tag, std::false_type{});
  };
  if (type == at::kFloat) with_type(float{});
  else with_type(Bits{});
}

void check(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 5, "expected a 5D CPU tensor");
  TORCH_CHECK(x.is_contiguous(at::MemoryFormat::ChannelsLast3d), "expected channels_last_3d");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16,
              "expected a float32 or bfloat16 input, got ", x.scalar_type());
  TORCH_CHECK(weight.scalar_type() == at::kFloat && bias.scalar_type() == at::kFloat &&
                  weight.is_contiguous() && bias.is_contiguous() &&
                  weight.numel() == x.size(1) && bias.numel() == x.size(1),
              "expected contiguous float32 weight and bias of one value per channel");
}

std::vector<at::Tensor> forward_op(const at::Tensor& x, const at::Tensor& weight,
                                   const at::Tensor& bias, double eps, bool relu) {
  check(x, weight, bias);
  const Layout layout(x);
  auto y = at::empty_like(x, at::MemoryFormat::ChannelsLast3d);
  auto stats_options = x.options().dtype(at::kFloat);
  auto mean = at::empty({x.size(0), x.size(1)}, stats_options);
  auto invstd = at::empty_like(mean);
  dispatch(x.scalar_type(), relu, [&](auto tag, auto relu_tag) {
    using T = decltype(tag);
    statistics(elements<T>(x), layout, eps, mean.data_ptr<float>(), invstd.data_ptr<float>());
    const Affine affine(layout, weight.const_data_ptr<float>(), bias.const_data_ptr<float>(),
                        mean.const_data_ptr<float>(), invstd.const_data_ptr<float>());
    normalize<T, decltype(relu_tag)::value>(elements<T>(x), mutable_elements<T>(y), layout,
                                            affine);
  });
  return {y, mean, invstd};
}

std::vector<at::Tensor> backward_op(const at::Tensor& grad, const at::Tensor& x,
                                    const at::Tensor& weight, const at::Tensor& bias,
                                    const at::Tensor& mean, const at::Tensor& invstd, bool relu) {
  check(x, weight, bias);
  TORCH_CHECK(grad.sizes() == x.sizes() && grad.scalar_type() == x.scalar_type() &&
                  grad.is_contiguous(at::MemoryFormat::ChannelsLast3d),
              "expected a channels_last_3d gradient shaped and typed as the input");
  const Layout layout(x);
  auto grad_x = at::empty_like(x, at::MemoryFormat::ChannelsLast3d);
  auto grad_weight = at::empty_like(weight);
  auto grad_bias = at::empty_like(bias);
  dispatch(x.scalar_type(), relu, [&](auto tag, auto relu_tag) {
    using T = decltype(tag);
    const Affine affine(layout, weight.const_data_ptr<float>(), bias.const_data_ptr<float>(),
                        mean.const_data_ptr<float>(), invstd.const_data_ptr<float>());
    backward<T, decltype(relu_tag)::value>(
        elements<T>(grad), elements<T>(x), mutable_elements<T>(grad_x), layout, affine,
        weight.const_data_ptr<float>(), mean.const_data_ptr<float>(),
        invstd.const_data_ptr<float>(), grad_weight.data_ptr<float>(),
        grad_bias.data_ptr<float>());
  });
  return {grad_x, grad_weight, grad_bias};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward_op, "channels_last_3d instance norm (+ ReLU), forward");
  m.def("backward", &backward_op, "channels_last_3d instance norm (+ ReLU), backward");
}

