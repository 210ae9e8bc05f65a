#include "model/bert.h"

#include <cmath>
#include <limits>

#include "core/error.h"
#include "model/attention.h"
#include "model/head_matmul.h"
#include "model/linear_gelu.h"
#include "model/residual_norm.h"

namespace ts {

namespace nn = torch::nn;

torch::Tensor bert_activation(const std::string& name, const torch::Tensor& x) {
  if (name == "gelu") return torch::gelu(x);  // exact: 0.5 x (1 + erf(x / sqrt 2)), as torch.nn.functional.gelu
  if (name == "gelu_new") {
    // HF's NewGELUActivation, written out as HF writes it (torch's tanh gelu rounds differently).
    const double c = std::sqrt(2.0 / M_PI);
    return 0.5 * x * (1.0 + torch::tanh(c * (x + 0.044715 * torch::pow(x, 3.0))));
  }
  if (name == "gelu_pytorch_tanh") return torch::gelu(x, "tanh");
  if (name == "relu") return torch::relu(x);
  if (name == "silu" || name == "swish") return torch::silu(x);
  if (name == "tanh") return torch::tanh(x);
  fail("hidden_act '{}' is not supported (gelu, gelu_new, gelu_pytorch_tanh, relu, silu, swish, tanh)", name);
}

torch::Tensor extended_attention_mask(const torch::Tensor& attention_mask, torch::Dtype dtype) {
  if (!attention_mask.defined()) return {};
  if (attention_mask.dim() != 2)
    fail("attention_mask must be [batch, seq], not {} dimensions", attention_mask.dim());
  // An all-ones mask adds nothing, and without one the scores skip a pass (on the CPU only: on a GPU the check would
  // wait for the device).
  if (attention_mask.device().is_cpu() && attention_mask.ne(0).all().item<bool>()) return {};
  double lowest = std::numeric_limits<float>::lowest();
  if (dtype == torch::kDouble) lowest = std::numeric_limits<double>::lowest();
  if (dtype == torch::kHalf) lowest = -65504.0;
  if (dtype == torch::kBFloat16) lowest = -3.3895313892515355e38;
  const torch::Tensor mask = attention_mask.index({torch::indexing::Slice(), torch::indexing::None,
                                                   torch::indexing::None, torch::indexing::Slice()})
                                 .to(dtype);
  return (1.0 - mask) * lowest;
}

namespace {

// A Linear over the last dimension as one addmm on [rows, in] (PyTorch 2's at::linear does the same for contiguous
// inputs of more than two dimensions): the bias goes into the matrix product rather than a pass of its own.
torch::Tensor linear_addmm(nn::Linear& layer, const torch::Tensor& x) {
  if (x.dim() < 3 || !x.is_contiguous() || !layer->bias.defined()) return layer->forward(x);
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = layer->weight.size(0);
  return torch::addmm(layer->bias, x.view({-1, x.size(-1)}), layer->weight.t()).view(shape);
}

// activation(layer(x)); exact GELU goes through the fused bias + GELU node where it can.
torch::Tensor linear_activation(nn::Linear& layer, const std::string& activation, const torch::Tensor& x) {
  if (activation == "gelu" && linear_gelu_fuses(x, layer->weight, layer->bias))
    return linear_gelu(x, layer->weight, layer->bias);
  return bert_activation(activation, linear_addmm(layer, x));
}

void check_ids(const torch::Tensor& ids, int64_t limit, const char* what, const char* limit_name) {
  if (ids.scalar_type() != torch::kLong && ids.scalar_type() != torch::kInt)
    fail("{} must be an integer tensor, not {}", what, c10::toString(ids.scalar_type()));
  // Out-of-range ids would otherwise surface as an index error deep inside an embedding; on the GPU the check
  // would cost a synchronisation, and the embedding's own device assertion reports it there.
  if (ids.numel() == 0 || !ids.device().is_cpu()) return;
  const int64_t low = ids.min().item<int64_t>();
  const int64_t high = ids.max().item<int64_t>();
  if (low < 0 || high >= limit) fail("{} holds {} but must be in [0, {}) ({})", what, low < 0 ? low : high, limit, limit_name);
}

}  // namespace

BertEmbeddingsImpl::BertEmbeddingsImpl(const BertConfig& config) {
  auto word_options = nn::EmbeddingOptions(config.vocab_size, config.hidden_size);
  if (config.pad_token_id) word_options.padding_idx(*config.pad_token_id);
  word_embeddings = register_module("word_embeddings", nn::Embedding(word_options));
  position_embeddings = register_module(
      "position_embeddings", nn::Embedding(config.max_position_embeddings, config.hidden_size));
  token_type_embeddings =
      register_module("token_type_embeddings", nn::Embedding(config.type_vocab_size, config.hidden_size));
  LayerNorm = register_module(
      "LayerNorm", nn::LayerNorm(nn::LayerNormOptions({config.hidden_size}).eps(config.layer_norm_eps)));
  dropout = register_module("dropout", Dropout(config.hidden_dropout_prob));
}

torch::Tensor BertEmbeddingsImpl::forward(const torch::Tensor& input_ids, const torch::Tensor& token_type_ids) {
  if (input_ids.dim() != 2) fail("input_ids must be [batch, seq], not {} dimensions", input_ids.dim());
  const int64_t seq = input_ids.size(1);
  const int64_t max_positions = position_embeddings->weight.size(0);
  if (seq > max_positions)
    fail("sequence length {} is longer than max_position_embeddings {}", seq, max_positions);
  check_ids(input_ids, word_embeddings->weight.size(0), "input_ids", "vocab_size");
  torch::Tensor types = token_type_ids;
  if (types.defined()) {
    if (types.sizes() != input_ids.sizes())
      fail("token_type_ids {} must have the shape of input_ids {}", c10::str(types.sizes()),
           c10::str(input_ids.sizes()));
    check_ids(types, token_type_embeddings->weight.size(0), "token_type_ids", "type_vocab_size");
  } else {
    types = torch::zeros_like(input_ids, torch::kLong);
  }
  const torch::Tensor position_ids =
      torch::arange(seq, torch::TensorOptions().dtype(torch::kLong).device(input_ids.device())).unsqueeze(0);
  // Summed in HF's order: (words + token types) + positions.
  const int64_t padding_idx = word_embeddings->options.padding_idx().value_or(-1);
  torch::Tensor embeddings =
      word_gradient_.lookup(input_ids, word_embeddings->weight, padding_idx) + token_type_embeddings(types);
  embeddings = embeddings + position_embeddings(position_ids);
  return dropout(LayerNorm(embeddings));
}

BertSelfAttentionImpl::BertSelfAttentionImpl(const BertConfig& config)
    : num_heads(config.num_attention_heads), head_size(config.head_size()) {
  const int64_t all_heads = num_heads * head_size;
  query = register_module("query", nn::Linear(config.hidden_size, all_heads));
  key = register_module("key", nn::Linear(config.hidden_size, all_heads));
  value = register_module("value", nn::Linear(config.hidden_size, all_heads));
  dropout = register_module("dropout", Dropout(config.attention_probs_dropout_prob));
  // One allocation each for the three weights and the three biases, so that the packed projection reads them in
  // place (model/attention.h).
  place_side_by_side({query->weight, key->weight, value->weight});
  place_side_by_side({query->bias, key->bias, value->bias});
}

torch::Tensor BertSelfAttentionImpl::forward(const torch::Tensor& hidden_states, const torch::Tensor& extended_mask) {
  const int64_t batch = hidden_states.size(0);
  const int64_t seq = hidden_states.size(1);
  const auto split_heads = [&](const torch::Tensor& x) {
    return x.view({batch, seq, num_heads, head_size}).permute({0, 2, 1, 3});
  };
  if (packed_self_attention_fuses(hidden_states, extended_mask, dropout->p) && query->bias.defined() &&
      key->bias.defined() && value->bias.defined()) {
    // The three projections as one product: one larger product runs faster than three, and backward's input
    // gradient is one product rather than three and two adds.
    const torch::Tensor packed = packed_projection(hidden_states, {query->weight, key->weight, value->weight},
                                                   {query->bias, key->bias, value->bias});
    return packed_self_attention(packed, num_heads, extended_mask, dropout->p, dropout->is_training());
  }
  const torch::Tensor q = split_heads(linear_addmm(query, hidden_states));
  const torch::Tensor k = split_heads(linear_addmm(key, hidden_states));
  const torch::Tensor v = split_heads(linear_addmm(value, hidden_states));
  // HF's operations in HF's order; in place, because the [batch, heads, seq, seq] scores are the largest
  // activations and matmul's backward does not need its output.
  torch::Tensor scores = head_matmul(q, k, /*transpose_b=*/true);
  scores.div_(std::sqrt(static_cast<double>(head_size)));
  if (extended_mask.defined()) scores.add_(extended_mask);
  torch::Tensor probs = torch::softmax(scores, -1);
  probs = dropout(probs);
  // Written as [batch, seq, heads, head_size] where it can be: no copy to merge the heads.
  const torch::Tensor context = head_matmul(probs, v, /*transpose_b=*/false, /*heads_last=*/true);
  return context.permute({0, 2, 1, 3}).reshape({batch, seq, num_heads * head_size});
}

BertResidualOutputImpl::BertResidualOutputImpl(int64_t in_features, const BertConfig& config) {
  dense = register_module("dense", nn::Linear(in_features, config.hidden_size));
  LayerNorm = register_module(
      "LayerNorm", nn::LayerNorm(nn::LayerNormOptions({config.hidden_size}).eps(config.layer_norm_eps)));
  dropout = register_module("dropout", Dropout(config.hidden_dropout_prob));
}

torch::Tensor BertResidualOutputImpl::forward(const torch::Tensor& hidden_states, const torch::Tensor& residual) {
  const ResidualNormWeights weights{dense->weight, dense->bias, LayerNorm->weight, LayerNorm->bias,
                                    LayerNorm->options.eps()};
  if (residual_norm_fuses(hidden_states, residual, weights) && dropout->p < 1)
    return dense_dropout_residual_norm(hidden_states, residual, weights, dropout->p, is_training());
  return LayerNorm(dropout(linear_addmm(dense, hidden_states)) + residual);
}

BertAttentionImpl::BertAttentionImpl(const BertConfig& config) {
  self_attention = register_module("self", BertSelfAttention(config));
  output = register_module("output", BertResidualOutput(config.hidden_size, config));
}

torch::Tensor BertAttentionImpl::forward(const torch::Tensor& hidden_states, const torch::Tensor& extended_mask) {
  return output(self_attention(hidden_states, extended_mask), hidden_states);
}

BertIntermediateImpl::BertIntermediateImpl(const BertConfig& config) : activation(config.hidden_act) {
  dense = register_module("dense", nn::Linear(config.hidden_size, config.intermediate_size));
}

torch::Tensor BertIntermediateImpl::forward(const torch::Tensor& hidden_states) {
  return linear_activation(dense, activation, hidden_states);
}

BertLayerImpl::BertLayerImpl(const BertConfig& config) {
  attention = register_module("attention", BertAttention(config));
  intermediate = register_module("intermediate", BertIntermediate(config));
  output = register_module("output", BertResidualOutput(config.intermediate_size, config));
}

torch::Tensor BertLayerImpl::forward(const torch::Tensor& hidden_states, const torch::Tensor& extended_mask) {
  const torch::Tensor attended = attention(hidden_states, extended_mask);
  return output(intermediate(attended), attended);
}

BertEncoderImpl::BertEncoderImpl(const BertConfig& config) {
  layer = register_module("layer", nn::ModuleList());
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    layers.push_back(BertLayer(config));
    layer->push_back(layers.back());
  }
}

BertLayer BertEncoderImpl::layer_at(int64_t index) const {
  if (index < 0 || index >= num_layers()) fail("encoder layer {} does not exist (the model has {})", index, num_layers());
  return layers[static_cast<std::size_t>(index)];
}

torch::Tensor BertEncoderImpl::forward(torch::Tensor hidden_states, const torch::Tensor& extended_mask, int64_t first,
                                       int64_t last) {
  if (last < 0) last = num_layers();
  if (first < 0 || first > last || last > num_layers())
    fail("cannot run encoder layers [{}, {}) of a {}-layer model", first, last, num_layers());
  for (int64_t i = first; i < last; ++i) hidden_states = layers[static_cast<std::size_t>(i)]->forward(hidden_states, extended_mask);
  return hidden_states;
}

BertPoolerImpl::BertPoolerImpl(const BertConfig& config) {
  dense = register_module("dense", nn::Linear(config.hidden_size, config.hidden_size));
}

torch::Tensor BertPoolerImpl::forward(const torch::Tensor& hidden_states) {
  return torch::tanh(dense(hidden_states.select(1, 0)));
}

BertModelImpl::BertModelImpl(const BertConfig& config_in, bool add_pooling_layer) : config(config_in) {
  config.validate();
  embeddings = register_module("embeddings", BertEmbeddings(config));
  encoder = register_module("encoder", BertEncoder(config));
  if (add_pooling_layer) pooler = register_module("pooler", BertPooler(config));
  init_bert_weights(*this, config);
}

torch::Tensor BertModelImpl::hidden_states_before(int64_t layer, const torch::Tensor& input_ids,
                                                  const torch::Tensor& attention_mask,
                                                  const torch::Tensor& token_type_ids) {
  torch::Tensor hidden = embeddings(input_ids, token_type_ids);
  if (layer == 0) return hidden;
  return encoder->forward(hidden, extended_attention_mask(attention_mask, hidden.scalar_type()), 0, layer);
}

BertOutputs BertModelImpl::forward_from(int64_t layer, const torch::Tensor& hidden_states,
                                        const torch::Tensor& attention_mask) {
  if (hidden_states.dim() != 3 || hidden_states.size(2) != config.hidden_size)
    fail("hidden states must be [batch, seq, {}], not {}", config.hidden_size, c10::str(hidden_states.sizes()));
  if (attention_mask.defined() && (attention_mask.dim() != 2 || attention_mask.size(0) != hidden_states.size(0) ||
                                   attention_mask.size(1) != hidden_states.size(1)))
    fail("attention_mask {} does not match the batch and sequence of the hidden states {}",
         c10::str(attention_mask.sizes()), c10::str(hidden_states.sizes()));
  BertOutputs out;
  out.last_hidden_state = encoder->forward(
      hidden_states, extended_attention_mask(attention_mask, hidden_states.scalar_type()), layer);
  if (pooler) out.pooled = pooler(out.last_hidden_state);
  return out;
}

BertOutputs BertModelImpl::forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                                   const torch::Tensor& token_type_ids) {
  if (attention_mask.defined() && attention_mask.sizes() != input_ids.sizes())
    fail("attention_mask {} must have the shape of input_ids {}", c10::str(attention_mask.sizes()),
         c10::str(input_ids.sizes()));
  return forward_from(0, embeddings(input_ids, token_type_ids), attention_mask);
}

BertForSequenceClassificationImpl::BertForSequenceClassificationImpl(const BertConfig& config_in)
    : config(config_in) {
  config.validate();
  bert = register_module("bert", BertModel(config, /*add_pooling_layer=*/true));
  // The paper's head reads the pooler output undropped (the authors' dropout line is commented out).
  const double head_dropout = config.head.type == "mlp" ? 0.0 : config.effective_classifier_dropout();
  dropout = register_module("dropout", Dropout(head_dropout));
  if (config.head.type == "mlp") {
    classifier_mlp = register_module(
        "classifier", nn::Sequential(nn::Linear(config.hidden_size, config.head.hidden_size), nn::ReLU(),
                                     nn::Linear(config.head.hidden_size, config.num_labels())));
  } else {
    classifier_linear = register_module("classifier", nn::Linear(config.hidden_size, config.num_labels()));
  }
  // The trunk initialised itself. Hugging Face's head gets BERT's initialisation; the paper's head is built as plain
  // PyTorch modules outside the Hugging Face model, so it keeps nn.Linear's own (kaiming-uniform weights, uniform
  // biases), which LibTorch's Linear already drew in its constructor.
  if (classifier_linear) init_bert_weights(*classifier_linear, config);
}

torch::Tensor BertForSequenceClassificationImpl::classify(const torch::Tensor& pooled) {
  const torch::Tensor dropped = dropout(pooled);
  return classifier_mlp ? classifier_mlp->forward(dropped) : classifier_linear(dropped);
}

SequenceClassifierOutputs BertForSequenceClassificationImpl::forward_from(int64_t layer,
                                                                          const torch::Tensor& hidden_states,
                                                                          const torch::Tensor& attention_mask) {
  BertOutputs trunk = bert->forward_from(layer, hidden_states, attention_mask);
  SequenceClassifierOutputs out;
  out.logits = classify(trunk.pooled);
  out.pooled = std::move(trunk.pooled);
  out.last_hidden_state = std::move(trunk.last_hidden_state);
  return out;
}

SequenceClassifierOutputs BertForSequenceClassificationImpl::forward(const torch::Tensor& input_ids,
                                                                     const torch::Tensor& attention_mask,
                                                                     const torch::Tensor& token_type_ids) {
  BertOutputs trunk = bert->forward(input_ids, attention_mask, token_type_ids);
  SequenceClassifierOutputs out;
  out.logits = classify(trunk.pooled);
  out.pooled = std::move(trunk.pooled);
  out.last_hidden_state = std::move(trunk.last_hidden_state);
  return out;
}

BertPredictionHeadTransformImpl::BertPredictionHeadTransformImpl(const BertConfig& config)
    : activation(config.hidden_act) {
  dense = register_module("dense", nn::Linear(config.hidden_size, config.hidden_size));
  LayerNorm = register_module(
      "LayerNorm", nn::LayerNorm(nn::LayerNormOptions({config.hidden_size}).eps(config.layer_norm_eps)));
}

torch::Tensor BertPredictionHeadTransformImpl::forward(const torch::Tensor& hidden_states) {
  return LayerNorm(linear_activation(dense, activation, hidden_states));
}

BertLMPredictionHeadImpl::BertLMPredictionHeadImpl(const BertConfig& config, torch::Tensor tied_decoder_weight)
    : decoder_weight(std::move(tied_decoder_weight)) {
  transform = register_module("transform", BertPredictionHeadTransform(config));
  bias = register_parameter("bias", torch::zeros({config.vocab_size}));
}

torch::Tensor BertLMPredictionHeadImpl::forward(const torch::Tensor& hidden_states) {
  return torch::linear(transform(hidden_states), decoder_weight, bias);
}

BertOnlyMLMHeadImpl::BertOnlyMLMHeadImpl(const BertConfig& config, torch::Tensor tied_decoder_weight) {
  predictions = register_module("predictions", BertLMPredictionHead(config, std::move(tied_decoder_weight)));
}

BertForMaskedLMImpl::BertForMaskedLMImpl(const BertConfig& config_in) : config(config_in) {
  config.validate();
  bert = register_module("bert", BertModel(config, /*add_pooling_layer=*/false));
  cls = register_module("cls", BertOnlyMLMHead(config, bert->embeddings->word_embeddings->weight));
  init_bert_weights(*cls, config);
}

MaskedLMOutputs BertForMaskedLMImpl::forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                                             const torch::Tensor& token_type_ids) {
  BertOutputs trunk = bert->forward(input_ids, attention_mask, token_type_ids);
  MaskedLMOutputs out;
  // The decoder weight is read through the embedding module at call time: a module moved with .to() or loaded
  // in place still shares it.
  cls->predictions->decoder_weight = bert->embeddings->word_embeddings->weight;
  out.logits = cls(trunk.last_hidden_state);
  out.last_hidden_state = std::move(trunk.last_hidden_state);
  return out;
}

namespace {

void init_one(torch::nn::Module& module, double range) {
  if (auto* linear = dynamic_cast<nn::LinearImpl*>(&module)) {
    linear->weight.normal_(0.0, range);
    if (linear->bias.defined()) linear->bias.zero_();
  } else if (auto* embedding = dynamic_cast<nn::EmbeddingImpl*>(&module)) {
    embedding->weight.normal_(0.0, range);
    if (const auto& padding = embedding->options.padding_idx()) embedding->weight[*padding].zero_();
  } else if (auto* norm = dynamic_cast<nn::LayerNormImpl*>(&module)) {
    norm->weight.fill_(1.0);
    norm->bias.zero_();
  } else if (auto* head = dynamic_cast<BertLMPredictionHeadImpl*>(&module)) {
    head->bias.zero_();
  }
}

}  // namespace

void init_bert_weights(torch::nn::Module& module, const BertConfig& config) {
  torch::NoGradGuard no_grad;
  // modules(include_self) would need `module` in a shared_ptr, which it is not yet inside a constructor.
  init_one(module, config.initializer_range);
  for (const auto& child : module.modules(/*include_self=*/false)) init_one(*child, config.initializer_range);
}

torch::Tensor mean_pooled_unit(const torch::Tensor& last_hidden_state, const torch::Tensor& attention_mask) {
  const auto mask = attention_mask.defined()
                        ? attention_mask.to(last_hidden_state.dtype()).unsqueeze(-1)
                        : torch::ones_like(last_hidden_state.select(-1, 0)).unsqueeze(-1);
  // The clamps are sentence-transformers': a row with no kept token, or a zero vector, stays finite.
  const auto mean = (last_hidden_state * mask).sum(1) / mask.sum(1).clamp_min(1e-9);
  return mean / mean.norm(2, -1, /*keepdim=*/true).clamp_min(1e-12);
}

}  // namespace ts
