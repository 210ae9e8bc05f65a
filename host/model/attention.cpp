#include "model/attention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "core/cpu.h"
#include "core/error.h"
#include "core/parallel.h"
#include "model/dropout.h"
#include "model/fused_kernels.h"
#include "model/head_matmul.h"
#include "model/vector_math.h"

namespace ts {
namespace {

__attribute__((always_inline)) inline float row_max(const float* __restrict x, int64_t n) {
  Lanes lanes(-std::numeric_limits<float>::infinity());
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) lanes.value[j] = x[i + j] > lanes.value[j] ? x[i + j] : lanes.value[j];
  float best = lanes.largest();
  for (; i < n; ++i) best = x[i] > best ? x[i] : best;
  return best;
}

// x[i] = e^(x[i] − shift), returning their sum.
__attribute__((always_inline)) inline float exp_shifted_sum(float* __restrict x, float shift, int64_t n) {
  Lanes sum;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) {
      x[i + j] = exp_nonpositive_or_zero(x[i + j] - shift);
      sum.value[j] += x[i + j];
    }
  for (; i < n; ++i) {
    x[i] = exp_nonpositive_or_zero(x[i] - shift);
    sum.value[0] += x[i];
  }
  return sum.total();
}

__attribute__((always_inline)) inline float row_dot(const float* __restrict x, const float* __restrict y, int64_t n) {
  Lanes sum;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) sum.value[j] += x[i + j] * y[i + j];
  for (; i < n; ++i) sum.value[0] += x[i] * y[i];
  return sum.total();
}

struct Rows {
  int64_t first, last;  // rows of the [batch · heads · seq, seq] scores
  int64_t seq;
  int64_t rows_per_batch;  // heads · seq: the rows that share a mask row
  float divisor;           // √d
};

// Scores become softmax(scores / √d + mask), in place; where dropping, `dropped` gets them with the mask applied.
__attribute__((always_inline)) inline void softmax_rows(float* __restrict scores, float* __restrict dropped,
                                                        const float* __restrict mask, const Rows& rows,
                                                        const DropoutMask& dropout, bool dropping) {
  const int64_t seq = rows.seq;
  for (int64_t row = rows.first; row < rows.last; ++row) {
    float* s = scores + row * seq;
    if (mask != nullptr) {
      const float* m = mask + (row / rows.rows_per_batch) * seq;
      for (int64_t c = 0; c < seq; ++c) s[c] = s[c] / rows.divisor + m[c];
    } else {
      for (int64_t c = 0; c < seq; ++c) s[c] = s[c] / rows.divisor;
    }
    const float inverse = 1.0f / exp_shifted_sum(s, row_max(s, seq), seq);
    for (int64_t c = 0; c < seq; ++c) s[c] *= inverse;
    if (dropping) apply_dropout_mask(dropped + row * seq, s, static_cast<uint64_t>(row * seq), seq, dropout);
  }
}

// On entry grad is the gradient of the dropped probabilities; it becomes the gradient of the scores before the
// division by √d. Where dropping, `dropped` gets the dropped probabilities again.
__attribute__((always_inline)) inline void softmax_backward_rows(float* __restrict grad,
                                                                 const float* __restrict probs,
                                                                 float* __restrict dropped, const Rows& rows,
                                                                 const DropoutMask& dropout, bool dropping) {
  const int64_t seq = rows.seq;
  for (int64_t row = rows.first; row < rows.last; ++row) {
    float* g = grad + row * seq;
    const float* p = probs + row * seq;
    const auto first_index = static_cast<uint64_t>(row * seq);
    if (dropping) {
      apply_dropout_mask(g, g, first_index, seq, dropout);
      apply_dropout_mask(dropped + row * seq, p, first_index, seq, dropout);
    }
    const float dot = row_dot(g, p, seq);
    for (int64_t c = 0; c < seq; ++c) g[c] = ((g[c] - dot) * p[c]) / rows.divisor;
  }
}

// Each pass twice: for the machine the build targets, and with AVX2 and FMA where the CPU has them.
void softmax_generic(float* scores, float* dropped, const float* mask, const Rows& rows, const DropoutMask& dropout,
                     bool dropping) {
  softmax_rows(scores, dropped, mask, rows, dropout, dropping);
}
void softmax_backward_generic(float* grad, const float* probs, float* dropped, const Rows& rows,
                              const DropoutMask& dropout, bool dropping) {
  softmax_backward_rows(grad, probs, dropped, rows, dropout, dropping);
}
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2,fma"))) void softmax_avx2(float* scores, float* dropped, const float* mask,
                                                       const Rows& rows, const DropoutMask& dropout, bool dropping) {
  softmax_rows(scores, dropped, mask, rows, dropout, dropping);
}
__attribute__((target("avx2,fma"))) void softmax_backward_avx2(float* grad, const float* probs, float* dropped,
                                                                const Rows& rows, const DropoutMask& dropout,
                                                                bool dropping) {
  softmax_backward_rows(grad, probs, dropped, rows, dropout, dropping);
}
#endif

void softmax(float* scores, float* dropped, const float* mask, const Rows& rows, const DropoutMask& dropout,
             bool dropping) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (cpu_has_avx2_fma()) return softmax_avx2(scores, dropped, mask, rows, dropout, dropping);
#endif
  softmax_generic(scores, dropped, mask, rows, dropout, dropping);
}

void softmax_backward(float* grad, const float* probs, float* dropped, const Rows& rows, const DropoutMask& dropout,
                      bool dropping) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (cpu_has_avx2_fma()) return softmax_backward_avx2(grad, probs, dropped, rows, dropout, dropping);
#endif
  softmax_backward_generic(grad, probs, dropped, rows, dropout, dropping);
}

// Calls pass(rows) on pieces of the [batch · heads · seq] rows, spread over the run's cores.
template <class Pass>
void for_row_pieces(int64_t batch, int64_t heads, int64_t seq, float divisor, const Pass& pass) {
  const int64_t grain = std::max<int64_t>(1, 8192 / std::max<int64_t>(seq, 1));
  parallel_ranges(batch * heads * seq, grain, [&](int64_t first, int64_t last) {
    pass(Rows{first, last, seq, heads * seq, divisor});
  });
}

// Q, K or V (slot 0, 1, 2) of a packed [batch, seq, 3 · hidden] tensor as [batch, heads, seq, head_size] views.
torch::Tensor slot(const torch::Tensor& packed, int64_t index, int64_t heads) {
  const int64_t hidden = packed.size(2) / 3;
  return packed.narrow(2, index * hidden, hidden)
      .view({packed.size(0), packed.size(1), heads, hidden / heads})
      .permute({0, 2, 1, 3});
}

// [batch, seq, hidden] as [batch, heads, seq, head_size] views.
torch::Tensor split_heads(const torch::Tensor& x, int64_t heads) {
  return x.view({x.size(0), x.size(1), heads, x.size(2) / heads}).permute({0, 2, 1, 3});
}

float score_divisor(int64_t head_size) { return static_cast<float>(std::sqrt(static_cast<double>(head_size))); }

struct PackedAttentionFunction : torch::autograd::Function<PackedAttentionFunction> {
  // mask_rows is [batch, seq] (contiguous), or empty for none (custom functions take no undefined tensors).
  static torch::Tensor forward(torch::autograd::AutogradContext* context, const torch::Tensor& packed,
                               const torch::Tensor& mask_rows, int64_t heads, double p, bool training) {
    const int64_t batch = packed.size(0), seq = packed.size(1), hidden = packed.size(2) / 3;
    const torch::Tensor q = slot(packed, 0, heads), k = slot(packed, 1, heads), v = slot(packed, 2, heads);
    torch::Tensor probs = torch::empty({batch, heads, seq, seq}, packed.options());
    gemm_per_head(q, false, k, true, probs);
    const bool dropping = training && p > 0;
    const DropoutMask dropout = dropping ? DropoutMask::draw(p) : DropoutMask::none();
    const torch::Tensor dropped = dropping ? torch::empty_like(probs) : probs;
    float* probs_data = probs.data_ptr<float>();
    float* dropped_data = dropped.data_ptr<float>();
    const float* mask_data = mask_rows.numel() > 0 ? mask_rows.data_ptr<float>() : nullptr;
    for_row_pieces(batch, heads, seq, score_divisor(hidden / heads), [&](const Rows& rows) {
      softmax(probs_data, dropped_data, mask_data, rows, dropout, dropping);
    });
    torch::Tensor out = torch::empty({batch, seq, hidden}, packed.options());
    gemm_per_head(dropped, false, v, false, split_heads(out, heads));
    context->save_for_backward({packed, probs});
    context->saved_data["heads"] = heads;
    context->saved_data["dropping"] = dropping;
    dropout.save_to(*context);
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* context,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = context->get_saved_variables();
    const torch::Tensor& packed = saved[0];
    const torch::Tensor& probs = saved[1];
    const int64_t heads = context->saved_data["heads"].toInt();
    const bool dropping = context->saved_data["dropping"].toBool();
    const DropoutMask dropout = DropoutMask::saved_in(*context);
    const int64_t batch = packed.size(0), seq = packed.size(1), hidden = packed.size(2) / 3;
    const torch::Tensor grad_heads = split_heads(grad_outputs[0].contiguous(), heads);
    const torch::Tensor q = slot(packed, 0, heads), k = slot(packed, 1, heads), v = slot(packed, 2, heads);

    torch::Tensor grad_scores = torch::empty_like(probs);
    gemm_per_head(grad_heads, false, v, true, grad_scores);  // d(dropped) = dC Vᵀ
    const torch::Tensor dropped = dropping ? torch::empty_like(probs) : probs;
    float* grad_data = grad_scores.data_ptr<float>();
    const float* probs_data = probs.data_ptr<float>();
    float* dropped_data = dropped.data_ptr<float>();
    for_row_pieces(batch, heads, seq, score_divisor(hidden / heads), [&](const Rows& rows) {
      softmax_backward(grad_data, probs_data, dropped_data, rows, dropout, dropping);
    });
    torch::Tensor grad_packed = torch::empty_like(packed, torch::MemoryFormat::Contiguous);
    gemm_per_head(grad_scores, false, k, false, slot(grad_packed, 0, heads));  // dQ = dS K
    gemm_per_head(grad_scores, true, q, false, slot(grad_packed, 1, heads));   // dK = dSᵀ Q
    gemm_per_head(dropped, true, grad_heads, false, slot(grad_packed, 2, heads));  // dV = droppedᵀ dC
    return {grad_packed, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

// The tensors as one, stacked along their first dimension: a view where they lie one after another in one
// contiguous storage, else a concatenation.
torch::Tensor stacked(const std::array<torch::Tensor, 3>& parts) {
  const torch::Tensor& first = parts[0];
  bool adjacent = first.is_contiguous();
  int64_t rows = 0;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    const torch::Tensor& part = parts[i];
    adjacent = adjacent && part.is_contiguous() && part.dtype() == first.dtype() &&
               part.device() == first.device() && part.sizes().slice(1) == first.sizes().slice(1) &&
               part.storage().is_alias_of(first.storage()) &&
               part.storage_offset() == first.storage_offset() + (rows * (first.numel() / first.size(0)));
    rows += part.size(0);
  }
  if (!adjacent) return torch::cat({parts[0], parts[1], parts[2]});
  std::vector<int64_t> sizes = first.sizes().vec();
  sizes[0] = rows;
  std::vector<int64_t> strides(sizes.size(), 1);
  for (std::size_t d = sizes.size() - 1; d > 0; --d) strides[d - 1] = strides[d] * sizes[d];
  return torch::empty({0}, first.options()).set_(first.storage(), first.storage_offset(), sizes, strides);
}

struct PackedProjectionFunction : torch::autograd::Function<PackedProjectionFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* context, const torch::Tensor& x,
                               const torch::Tensor& query_weight, const torch::Tensor& key_weight,
                               const torch::Tensor& value_weight, const torch::Tensor& query_bias,
                               const torch::Tensor& key_bias, const torch::Tensor& value_bias) {
    const torch::Tensor weight = stacked({query_weight, key_weight, value_weight});
    const torch::Tensor bias = stacked({query_bias, key_bias, value_bias});
    const torch::Tensor rows = x.reshape({-1, x.size(-1)});
    context->save_for_backward({rows, query_weight, key_weight, value_weight});
    context->saved_data["shape"] = x.sizes().vec();
    std::vector<int64_t> shape = x.sizes().vec();
    shape.back() = weight.size(0);
    return torch::addmm(bias, rows, weight.t()).view(shape);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* context,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = context->get_saved_variables();
    const torch::Tensor& rows = saved[0];
    const std::array<torch::Tensor, 3> weights{saved[1], saved[2], saved[3]};
    const torch::Tensor grad = grad_outputs[0].reshape({rows.size(0), -1});
    torch::autograd::variable_list grads(7);
    if (context->needs_input_grad(0))
      grads[0] = torch::mm(grad, stacked(weights)).view(context->saved_data["shape"].toIntVector());
    const auto split_rows = [&](const torch::Tensor& whole, std::size_t first_input) {
      int64_t row = 0;
      for (std::size_t i = 0; i < 3; ++i) {
        const int64_t count = weights[i].size(0);
        if (context->needs_input_grad(first_input + i)) grads[first_input + i] = whole.narrow(0, row, count);
        row += count;
      }
    };
    if (context->needs_input_grad({{1, 4}})) split_rows(torch::mm(grad.t(), rows), 1);
    if (context->needs_input_grad({{4, 7}})) split_rows(grad.sum(0), 4);
    return grads;
  }
};

}  // namespace

torch::Tensor packed_projection(const torch::Tensor& x, const std::array<torch::Tensor, 3>& weights,
                                const std::array<torch::Tensor, 3>& biases) {
  for (std::size_t i = 0; i < 3; ++i)
    if (!weights[i].defined() || !biases[i].defined() || weights[i].dim() != 2 || biases[i].dim() != 1 ||
        weights[i].size(0) != biases[i].size(0) || weights[i].size(1) != x.size(-1))
      fail("packed_projection: projection {} is not a [out, {}] weight with an [out] bias", i, x.size(-1));
  return PackedProjectionFunction::apply(x, weights[0], weights[1], weights[2], biases[0], biases[1], biases[2]);
}

void place_side_by_side(const std::vector<torch::Tensor>& tensors) {
  if (tensors.empty()) return;
  const torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> flat;
  for (const auto& t : tensors) flat.push_back(t.reshape({-1}));
  const torch::Tensor storage = torch::cat(flat);
  int64_t offset = 0;
  for (const auto& t : tensors) {
    t.set_data(storage.narrow(0, offset, t.numel()).view(t.sizes()));
    offset += t.numel();
  }
}

bool packed_self_attention_fuses(const torch::Tensor& hidden_states, const torch::Tensor& extended_mask,
                                 double dropout_p) {
  if (!fused_kernels_enabled() || !(dropout_p < 1) || hidden_states.dim() != 3 || hidden_states.numel() == 0 ||
      !fusable_tensor(hidden_states))
    return false;
  if (!extended_mask.defined()) return true;
  const auto mask_shape = std::vector<int64_t>{hidden_states.size(0), 1, 1, hidden_states.size(1)};
  return fusable_tensor(extended_mask) && extended_mask.sizes() == c10::IntArrayRef(mask_shape);
}

torch::Tensor packed_self_attention(const torch::Tensor& packed, int64_t heads, const torch::Tensor& extended_mask,
                                    double dropout_p, bool training) {
  if (packed.dim() != 3 || packed.size(2) % 3 != 0 || heads < 1 || (packed.size(2) / 3) % heads != 0)
    fail("packed_self_attention: {} is not [batch, seq, 3 · hidden] with hidden divisible by {} heads",
         c10::str(packed.sizes()), heads);
  if (!fusable_tensor(packed)) fail("packed_self_attention: the projections must be float32 on the CPU");
  if (!(dropout_p >= 0 && dropout_p < 1))
    fail("packed_self_attention: dropout probability {} is not in [0, 1)", dropout_p);
  torch::Tensor mask_rows = torch::empty({0}, packed.options());
  if (extended_mask.defined()) {
    if (!fusable_tensor(extended_mask) || extended_mask.numel() != packed.size(0) * packed.size(1))
      fail("packed_self_attention: the mask {} must be float32 [batch, 1, 1, seq] for {}",
           c10::str(extended_mask.sizes()), c10::str(packed.sizes()));
    mask_rows = extended_mask.reshape({packed.size(0), packed.size(1)}).contiguous();
  }
  return PackedAttentionFunction::apply(packed.contiguous(), mask_rows, heads, dropout_p, training);
}

}  // namespace ts
