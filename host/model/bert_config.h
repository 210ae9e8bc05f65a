#pragma once
// BERT's config.json, as Hugging Face transformers (BertConfig, PretrainedConfig) reads and writes it.
// Fields the host does not use are kept and written back, so a re-saved folder loses nothing.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ts {

// The classification head on the pooler output.
//   linear: Hugging Face BertForSequenceClassification: dropout, then `classifier` Linear(H -> C).
//   mlp:    the two-stage paper's head: no dropout, `classifier` = Sequential(Linear(H -> hidden), ReLU,
//           Linear(hidden -> C)), whose parameters are named classifier.0.* and classifier.2.*, as a PyTorch
//           nn.Sequential names them, with PyTorch's default nn.Linear initialisation. Saved in config.json
//           as "twostage_head": {"type": "mlp", "hidden_size": 50}.
struct ClassifierHeadConfig {
  std::string type = "linear";  // "linear" or "mlp"
  int64_t hidden_size = 50;     // mlp only
};

struct BertConfig {
  int64_t vocab_size = 30522;
  int64_t hidden_size = 768;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t intermediate_size = 3072;
  // "gelu" (exact, erf), "gelu_new" (tanh approximation as in HF's NewGELUActivation), "gelu_pytorch_tanh",
  // "relu", "silu" (= "swish"), "tanh".
  std::string hidden_act = "gelu";
  double hidden_dropout_prob = 0.1;
  double attention_probs_dropout_prob = 0.1;
  int64_t max_position_embeddings = 512;
  int64_t type_vocab_size = 2;
  double initializer_range = 0.02;
  double layer_norm_eps = 1e-12;
  std::optional<int64_t> pad_token_id = 0;  // null: no padding row in the word embeddings
  std::string position_embedding_type = "absolute";  // the only one implemented
  std::optional<double> classifier_dropout;           // null in JSON: use hidden_dropout_prob
  // Label names by id; num_labels() is its size. Hugging Face's default is two labels LABEL_0, LABEL_1.
  std::vector<std::string> id2label{"LABEL_0", "LABEL_1"};
  ClassifierHeadConfig head;
  // Every field as read from the file (or set by the user); to_json() writes these with the known fields
  // overriding them, so fields this struct does not model survive a load/save.
  nlohmann::json extra = nlohmann::json::object();

  int64_t num_labels() const { return static_cast<int64_t>(id2label.size()); }
  // Sets `n` labels named LABEL_0 ... LABEL_{n-1} (what HF does for num_labels=n), unless the names already fit.
  void set_num_labels(int64_t n);
  double effective_classifier_dropout() const { return classifier_dropout.value_or(hidden_dropout_prob); }
  int64_t head_size() const { return hidden_size / num_attention_heads; }

  // Throws ts::Error naming `source` and the field for wrong types, unknown activations, or sizes that do not fit
  // together (hidden_size not divisible by num_attention_heads, ...).
  static BertConfig from_json(const nlohmann::json& json, const std::string& source = "config.json");
  // `path` is a config.json or a folder holding one.
  static BertConfig load(const std::filesystem::path& path);
  // With sorted keys, as HF writes it. `architectures` is written when not empty.
  nlohmann::json to_json(const std::vector<std::string>& architectures = {}) const;
  // Writes to_json() with 2-space indentation, atomically.
  void save(const std::filesystem::path& file, const std::vector<std::string>& architectures = {}) const;
  void validate(const std::string& source = "config") const;
};

}  // namespace ts
