#pragma once
// BERT with the LibTorch C++ frontend, numerically equal to Hugging Face transformers 4.39 modeling_bert.py
// (eager attention, float32). Submodules carry exactly HF's names, so named_parameters() keys are HF's
// state_dict keys: bert.embeddings.word_embeddings.weight, bert.encoder.layer.0.attention.self.query.weight, ...
//
// Inputs: input_ids and token_type_ids are int64 [batch, seq]; attention_mask is [batch, seq], 1 for real tokens,
// 0 for padding (any integer or floating dtype). An undefined token_type_ids means all zeros; an undefined
// attention_mask means all ones. Padding rows are masked with finfo(float).min added to the scores, as HF does, so
// each row of a padded batch gives what it gives alone.
//
// Running from a layer: hidden_states_before(k, ...) returns the input of encoder layer k (embeddings for k = 0),
// and forward_from(k, hidden, mask) runs layers k..L-1 and the pooler. With the lower layers frozen and in eval
// mode, a trainer can cache hidden_states_before(k) once and train the top from it.
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "model/bert_config.h"
#include "model/dropout.h"
#include "model/embedding.h"

namespace ts {

// The activation named by config.hidden_act, computed as HF computes it.
torch::Tensor bert_activation(const std::string& name, const torch::Tensor& x);

// [batch, seq] mask of ones/zeros -> [batch, 1, 1, seq] float additive mask: 0 where attended,
// finfo(dtype).min where masked (HF's get_extended_attention_mask).
torch::Tensor extended_attention_mask(const torch::Tensor& attention_mask, torch::Dtype dtype);

struct BertEmbeddingsImpl : torch::nn::Module {
  explicit BertEmbeddingsImpl(const BertConfig& config);
  // position_ids are 0..seq-1; token_type_ids may be undefined (zeros).
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& token_type_ids = {});

  torch::nn::Embedding word_embeddings{nullptr}, position_embeddings{nullptr}, token_type_embeddings{nullptr};
  torch::nn::LayerNorm LayerNorm{nullptr};
  Dropout dropout{nullptr};

 private:
  ReusedEmbeddingGradient word_gradient_;  // the largest gradient of the model, kept for reuse
};
TORCH_MODULE(BertEmbeddings);

struct BertSelfAttentionImpl : torch::nn::Module {
  explicit BertSelfAttentionImpl(const BertConfig& config);
  // `extended_mask` is [batch, 1, 1, seq] additive (or undefined).
  torch::Tensor forward(const torch::Tensor& hidden_states, const torch::Tensor& extended_mask);

  int64_t num_heads, head_size;
  torch::nn::Linear query{nullptr}, key{nullptr}, value{nullptr};
  Dropout dropout{nullptr};
};
TORCH_MODULE(BertSelfAttention);

// dense -> dropout -> LayerNorm(x + residual); HF's BertSelfOutput and BertOutput share this shape.
struct BertResidualOutputImpl : torch::nn::Module {
  BertResidualOutputImpl(int64_t in_features, const BertConfig& config);
  torch::Tensor forward(const torch::Tensor& hidden_states, const torch::Tensor& residual);

  torch::nn::Linear dense{nullptr};
  torch::nn::LayerNorm LayerNorm{nullptr};
  Dropout dropout{nullptr};
};
TORCH_MODULE(BertResidualOutput);

struct BertAttentionImpl : torch::nn::Module {
  explicit BertAttentionImpl(const BertConfig& config);
  torch::Tensor forward(const torch::Tensor& hidden_states, const torch::Tensor& extended_mask);

  BertSelfAttention self_attention{nullptr};  // registered as "self"
  BertResidualOutput output{nullptr};
};
TORCH_MODULE(BertAttention);

struct BertIntermediateImpl : torch::nn::Module {
  explicit BertIntermediateImpl(const BertConfig& config);
  torch::Tensor forward(const torch::Tensor& hidden_states);

  std::string activation;
  torch::nn::Linear dense{nullptr};
};
TORCH_MODULE(BertIntermediate);

struct BertLayerImpl : torch::nn::Module {
  explicit BertLayerImpl(const BertConfig& config);
  torch::Tensor forward(const torch::Tensor& hidden_states, const torch::Tensor& extended_mask);

  BertAttention attention{nullptr};
  BertIntermediate intermediate{nullptr};
  BertResidualOutput output{nullptr};
};
TORCH_MODULE(BertLayer);

struct BertEncoderImpl : torch::nn::Module {
  explicit BertEncoderImpl(const BertConfig& config);
  // Runs layers [first, last) (last = -1: to the end).
  torch::Tensor forward(torch::Tensor hidden_states, const torch::Tensor& extended_mask, int64_t first = 0,
                        int64_t last = -1);
  int64_t num_layers() const { return static_cast<int64_t>(layers.size()); }
  BertLayer layer_at(int64_t index) const;

  torch::nn::ModuleList layer{nullptr};  // registered as "layer": encoder.layer.N.*
  std::vector<BertLayer> layers;
};
TORCH_MODULE(BertEncoder);

struct BertPoolerImpl : torch::nn::Module {
  explicit BertPoolerImpl(const BertConfig& config);
  // tanh(dense(hidden_states[:, 0])).
  torch::Tensor forward(const torch::Tensor& hidden_states);

  torch::nn::Linear dense{nullptr};
};
TORCH_MODULE(BertPooler);

struct BertOutputs {
  torch::Tensor last_hidden_state;  // [batch, seq, hidden]
  torch::Tensor pooled;             // [batch, hidden]; undefined without a pooler
};

struct BertModelImpl : torch::nn::Module {
  explicit BertModelImpl(const BertConfig& config, bool add_pooling_layer = true);

  BertOutputs forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask = {},
                      const torch::Tensor& token_type_ids = {});
  // The input of encoder layer `layer` (0..L): embeddings, then layers [0, layer).
  torch::Tensor hidden_states_before(int64_t layer, const torch::Tensor& input_ids,
                                     const torch::Tensor& attention_mask = {},
                                     const torch::Tensor& token_type_ids = {});
  // Layers [layer, L) and the pooler, from that layer's input `hidden_states` [batch, seq, hidden].
  BertOutputs forward_from(int64_t layer, const torch::Tensor& hidden_states,
                           const torch::Tensor& attention_mask = {});

  BertConfig config;
  BertEmbeddings embeddings{nullptr};
  BertEncoder encoder{nullptr};
  BertPooler pooler{nullptr};  // null when add_pooling_layer is false (BertForMaskedLM)
};
TORCH_MODULE(BertModel);

struct SequenceClassifierOutputs {
  torch::Tensor logits;             // [batch, num_labels]
  torch::Tensor pooled;             // [batch, hidden]
  torch::Tensor last_hidden_state;  // [batch, seq, hidden]
};

// Hugging Face BertForSequenceClassification (config.head.type "linear": dropout (classifier_dropout, else
// hidden_dropout_prob), then one Linear with BERT's initialisation), or the paper's MLP head (config.head.type "mlp",
// as the authors built it: no dropout, PyTorch's default nn.Linear initialisation).
struct BertForSequenceClassificationImpl : torch::nn::Module {
  explicit BertForSequenceClassificationImpl(const BertConfig& config);

  SequenceClassifierOutputs forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask = {},
                                    const torch::Tensor& token_type_ids = {});
  // From encoder layer `layer`'s input (see BertModel::hidden_states_before).
  SequenceClassifierOutputs forward_from(int64_t layer, const torch::Tensor& hidden_states,
                                         const torch::Tensor& attention_mask = {});
  // The head on a pooled output (dropout first for the linear head).
  torch::Tensor classify(const torch::Tensor& pooled);

  BertConfig config;
  BertModel bert{nullptr};
  Dropout dropout{nullptr};
  // Exactly one of these is set, registered as "classifier": Linear(H, C) for head "linear" (classifier.weight,
  // classifier.bias); Sequential(Linear(H, h), ReLU, Linear(h, C)) for head "mlp" (classifier.0.*, classifier.2.*).
  torch::nn::Linear classifier_linear{nullptr};
  torch::nn::Sequential classifier_mlp{nullptr};
};
TORCH_MODULE(BertForSequenceClassification);

// cls.predictions: transform (dense, activation, LayerNorm), then the decoder, whose weight is the word embedding
// matrix (tied, so not a parameter of its own and not saved, as HF saves it) plus `bias`.
struct BertPredictionHeadTransformImpl : torch::nn::Module {
  explicit BertPredictionHeadTransformImpl(const BertConfig& config);
  torch::Tensor forward(const torch::Tensor& hidden_states);

  std::string activation;
  torch::nn::Linear dense{nullptr};
  torch::nn::LayerNorm LayerNorm{nullptr};
};
TORCH_MODULE(BertPredictionHeadTransform);

struct BertLMPredictionHeadImpl : torch::nn::Module {
  BertLMPredictionHeadImpl(const BertConfig& config, torch::Tensor tied_decoder_weight);
  torch::Tensor forward(const torch::Tensor& hidden_states);

  BertPredictionHeadTransform transform{nullptr};
  torch::Tensor decoder_weight;  // the word embeddings' weight, shared
  torch::Tensor bias;
};
TORCH_MODULE(BertLMPredictionHead);

struct BertOnlyMLMHeadImpl : torch::nn::Module {
  BertOnlyMLMHeadImpl(const BertConfig& config, torch::Tensor tied_decoder_weight);
  torch::Tensor forward(const torch::Tensor& hidden_states) { return predictions->forward(hidden_states); }

  BertLMPredictionHead predictions{nullptr};
};
TORCH_MODULE(BertOnlyMLMHead);

struct MaskedLMOutputs {
  torch::Tensor logits;             // [batch, seq, vocab]
  torch::Tensor last_hidden_state;  // [batch, seq, hidden]
};

// Hugging Face BertForMaskedLM: bert (no pooler) and cls.predictions.
struct BertForMaskedLMImpl : torch::nn::Module {
  explicit BertForMaskedLMImpl(const BertConfig& config);
  MaskedLMOutputs forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask = {},
                          const torch::Tensor& token_type_ids = {});

  BertConfig config;
  BertModel bert{nullptr};
  BertOnlyMLMHead cls{nullptr};
};
TORCH_MODULE(BertForMaskedLM);

// Hugging Face's _init_weights: Linear and Embedding weights ~ N(0, initializer_range), biases 0, the padding row
// of an Embedding 0, LayerNorm weight 1 and bias 0. Applied by every constructor above; uses torch's global
// generator (seed it with torch::manual_seed).
void init_bert_weights(torch::nn::Module& module, const BertConfig& config);

// One vector per row: the mean of the token states that attention_mask keeps (all of them without a mask), scaled to
// unit length. This is sentence-transformers' mean pooling, so for an encoder trained with it (all-MiniLM-L6-v2) the
// dot product of two rows is the cosine similarity it was trained to give.
torch::Tensor mean_pooled_unit(const torch::Tensor& last_hidden_state, const torch::Tensor& attention_mask);

}  // namespace ts
