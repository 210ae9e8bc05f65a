#pragma once
// BERT's self-attention after its projections, softmax(Q Kᵀ / √d + mask) with dropout, times V, for every head, as
// one autograd node on the CPU, reading Q, K and V from one packed [batch, seq, 3 · hidden] tensor.
//
// Why: as operators, the scores go through a division, the mask's add, softmax and dropout, each a pass over
// [batch, heads, seq, seq] with its allocation and autograd node, and backward runs dropout's, softmax's and the
// division's gradients as passes of their own; with three separate projections, the input's gradient is three
// products and two adds. Here forward is the products per head and one pass per row between them (scale, mask,
// softmax, dropout); backward is one pass per row and the products, which write dQ, dK and dV straight into one
// packed gradient, so that the projections are one product each way (BertSelfAttention packs query, key and value).
// Only softmax's output is kept for backward (the operators keep it and the dropped copy): the dropout mask is
// hashed again, as ts::dropout's backward does.
//
// The arithmetic is HF's: scores divided by √d (not multiplied by its inverse), the additive mask, softmax with the
// row's maximum subtracted, inverted dropout with ts::dropout's mask (model/dropout.h: the same seed from torch's
// generator and the same bits per element, so the fused and unfused paths drop the same elements). exp is Cephes's
// (model/vector_math.h), within about an ulp of torch's.
//
// Used for float32 CPU tensors with an additive mask of shape [batch, 1, 1, seq] (or none) and p < 1.
#include <array>
#include <vector>

#include <torch/torch.h>

namespace ts {

// x · [Wq; Wk; Wv]ᵀ + [bq; bk; bv]: the three projections as one product, [..., in] → [..., 3 · out], one autograd
// node. Where the weights (and the biases) lie one after another in one storage, as place_side_by_side leaves them,
// the product reads them there; otherwise they are concatenated first (a copy per call). Backward is one product
// for the input's gradient and one for the three weights' (rows of one result), and autograd still checks each
// weight for in-place changes between forward and backward.
torch::Tensor packed_projection(const torch::Tensor& x, const std::array<torch::Tensor, 3>& weights,
                                const std::array<torch::Tensor, 3>& biases);

// Moves the tensors' data into one new allocation, one after another (values, shapes and autograd state unchanged),
// so that packed_projection reads them without a copy. Replacing a tensor's data later (Module::to, set_data) undoes
// it for that tensor, and packed_projection concatenates again; copying into it in place (loading) keeps it.
void place_side_by_side(const std::vector<torch::Tensor>& tensors);

// packed is [batch, seq, 3 · hidden]: the query, key and value projections side by side, each of `heads` heads.
// extended_mask is [batch, 1, 1, seq] additive, or undefined. Returns the context, [batch, seq, hidden].
torch::Tensor packed_self_attention(const torch::Tensor& packed, int64_t heads, const torch::Tensor& extended_mask,
                                    double dropout_p, bool training);

// Whether packed_self_attention can run on these operands (otherwise BertSelfAttention runs the operators).
bool packed_self_attention_fuses(const torch::Tensor& hidden_states, const torch::Tensor& extended_mask,
                                 double dropout_p);

}  // namespace ts
