#include "model/embedding.h"

namespace ts {
namespace {

struct EmbeddingFunction : torch::autograd::Function<EmbeddingFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* context, const torch::Tensor& weight,
                               const torch::Tensor& ids, const torch::Tensor& buffer, int64_t padding_idx) {
    const torch::Tensor flat_ids = ids.reshape({-1}).to(torch::kLong);
    context->save_for_backward({flat_ids});
    context->saved_data["buffer"] = buffer;
    context->saved_data["padding_idx"] = padding_idx;
    std::vector<int64_t> shape = ids.sizes().vec();
    shape.push_back(weight.size(1));
    return weight.index_select(0, flat_ids).view(shape);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* context,
                                                 torch::autograd::variable_list grad_outputs) {
    const torch::Tensor flat_ids = context->get_saved_variables()[0];
    torch::Tensor grad_weight = context->saved_data["buffer"].toTensor();
    // One holder (the buffer itself): the last step's gradient is gone, and its memory can be written again.
    if (grad_weight.storage().use_count() == 1)
      grad_weight.zero_();
    else
      grad_weight = torch::zeros_like(grad_weight);
    const torch::Tensor grad = grad_outputs[0].reshape({-1, grad_weight.size(1)});
    grad_weight.index_add_(0, flat_ids, grad);
    const int64_t padding_idx = context->saved_data["padding_idx"].toInt();
    if (padding_idx >= 0) grad_weight.select(0, padding_idx).zero_();
    // A view: a tensor object of its own, which autograd takes as the weight's gradient without copying it.
    return {grad_weight.view(grad_weight.sizes()), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor ReusedEmbeddingGradient::lookup(const torch::Tensor& ids, const torch::Tensor& weight,
                                              int64_t padding_idx) {
  const bool reusable = fused_kernels_enabled() && torch::GradMode::is_enabled() && weight.requires_grad() &&
                        weight.device().is_cpu() && weight.scalar_type() == torch::kFloat && weight.dim() == 2 &&
                        weight.is_contiguous();
  if (!reusable) return torch::embedding(weight, ids, padding_idx);
  if (!buffer_.defined() || buffer_.sizes() != weight.sizes()) buffer_ = torch::empty_like(weight);
  return EmbeddingFunction::apply(weight, ids, buffer_, padding_idx);
}

}  // namespace ts
