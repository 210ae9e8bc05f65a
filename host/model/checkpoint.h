#pragma once
// Hugging Face checkpoint folders: config.json + model.safetensors + vocab.txt (+ tokenizer_config.json).
//
// Loading follows transformers' from_pretrained: keys with or without the "bert." prefix, legacy LayerNorm
// gamma/beta names, the MLM decoder tied to the word embeddings (absent from the file), F16/BF16/F64 weights
// converted to the parameter's float32, and the same report of missing ("newly initialized") and unexpected
// ("not used") weights, logged and returned. A shape mismatch is an error naming the key and both shapes, unless
// ignore_mismatched_sizes asks to re-initialise such weights, as transformers' option of that name does.
//
// Saving writes a folder that transformers' from_pretrained loads: config.json with architectures, model_type
// and id2label/label2id, model.safetensors (float32, or float16 on request) without the tied decoder weight, and the
// tokenizer files copied from the source folder.
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "io/safetensors.h"
#include "model/bert.h"
#include "model/bert_config.h"

namespace ts {

namespace text {
class Tokenizer;  // text/tokenizer.h
}

struct LoadReport {
  std::string model_class;               // "BertForSequenceClassification", ...
  std::filesystem::path source;          // the weights file
  std::vector<std::string> loaded;       // model keys filled from the checkpoint
  std::vector<std::string> missing;      // model keys not in the checkpoint: newly initialised
  std::vector<std::string> unexpected;   // checkpoint keys the model does not use
  std::vector<std::string> mismatched;   // re-initialised because of ignore_mismatched_sizes (key: file vs model shape)
  std::vector<std::string> converted;    // loaded from another dtype (key: F16 -> float32)
};

struct LoadOptions {
  // Overrides of config.json. A different num_labels gives the classifier a new shape (see ignore_mismatched_sizes).
  std::optional<int64_t> num_labels;
  std::optional<std::string> head;  // "linear" or "mlp"
  std::optional<int64_t> head_hidden_size;
  // As transformers: false makes a shape mismatch an error; true re-initialises those weights and reports them.
  bool ignore_mismatched_sizes = false;
  // The model's dtype and device after loading (weights are converted on the way in).
  torch::Dtype dtype = torch::kFloat32;
  torch::Device device = torch::kCPU;

  // {num_labels = C, head = "paper" (Linear-ReLU-Linear on the pooler, "mlp") | "hf" (one Linear, "linear"),
  //  head_hidden = 50, device = "cpu" | "cuda[:N]", ignore_mismatched_sizes = false}; unknown keys are errors
  // naming `where`.
  static LoadOptions from_json(const nlohmann::json& options, const std::string& where);
};

// config.json of a folder, with the overrides of `options` applied.
BertConfig load_config(const std::filesystem::path& folder, const LoadOptions& options = {});

// The weights file of a folder: model.safetensors. A folder with only pytorch_model.bin (or a sharded checkpoint)
// is an error that says how to convert it.
std::filesystem::path weights_file(const std::filesystem::path& folder);

// Copies the tensors of `file` into `module`'s parameters and buffers by name (see the header comment), logs
// transformers' messages and returns the report. `model_class` names the model in messages.
LoadReport load_weights(torch::nn::Module& module, const safetensors::File& file, const std::string& model_class,
                        bool ignore_mismatched_sizes = false);

BertModel load_bert_model(const std::filesystem::path& folder, const LoadOptions& options = {},
                          LoadReport* report = nullptr);
BertForSequenceClassification load_sequence_classifier(const std::filesystem::path& folder,
                                                       const LoadOptions& options = {}, LoadReport* report = nullptr);
BertForMaskedLM load_masked_lm(const std::filesystem::path& folder, const LoadOptions& options = {},
                               LoadReport* report = nullptr);

struct SaveOptions {
  bool fp16 = false;  // store F16 instead of F32
  // Folder whose vocab.txt, tokenizer_config.json, special_tokens_map.json and tokenizer.json are copied (usually
  // the folder the model was loaded from). Empty: none copied.
  std::filesystem::path tokenizer_from;
  // When set, written with Tokenizer::save (vocab.txt, tokenizer_config.json, special_tokens_map.json) instead of
  // copying from tokenizer_from. Must outlive the call.
  const text::Tokenizer* tokenizer = nullptr;
  // Written into a generated tokenizer_config.json when tokenizer_from has none.
  bool do_lower_case = true;
};

// Writes `module`'s parameters and buffers (named as HF names them) to the safetensors `file`, float32 or float16.
void save_weights(torch::nn::Module& module, const std::filesystem::path& file, bool fp16 = false);

void save_pretrained(BertForSequenceClassification& model, const std::filesystem::path& folder,
                     const SaveOptions& options = {});
void save_pretrained(BertForMaskedLM& model, const std::filesystem::path& folder, const SaveOptions& options = {});
void save_pretrained(BertModel& model, const std::filesystem::path& folder, const SaveOptions& options = {});

}  // namespace ts
