#include "model/checkpoint.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <set>

#include "core/error.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/options.h"
#include "runtime/environment.h"
#include "text/tokenizer.h"

namespace ts {

namespace fs = std::filesystem;

namespace {

const std::string kPrefix = "bert.";

bool starts_with(const std::string& text, const std::string& prefix) {
  return text.size() >= prefix.size() && text.compare(0, prefix.size(), prefix) == 0;
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string shape_text(c10::IntArrayRef shape) { return c10::str(shape); }

std::string join(const std::vector<std::string>& items) {
  std::string text;
  for (const auto& item : items) text += (text.empty() ? "'" : ", '") + item + "'";
  return "[" + text + "]";
}

std::optional<torch::Dtype> torch_dtype(safetensors::DType dtype) {
  using safetensors::DType;
  switch (dtype) {
    case DType::F32: return torch::kFloat32;
    case DType::F16: return torch::kFloat16;
    case DType::BF16: return torch::kBFloat16;
    case DType::F64: return torch::kFloat64;
    case DType::I64: return torch::kInt64;
    case DType::I32: return torch::kInt32;
    case DType::I16: return torch::kInt16;
    case DType::I8: return torch::kInt8;
    case DType::U8: return torch::kUInt8;
    case DType::BOOL: return torch::kBool;
    default: return std::nullopt;  // U16/U32/U64 have no torch dtype in LibTorch 1.13
  }
}

// A tensor over the mapped bytes (no copy) when they are aligned for the element type, else an aligned copy.
// safetensors data is little-endian, as is every platform LibTorch runs on.
torch::Tensor tensor_from_view(const safetensors::TensorView& view, const std::string& file_label) {
  const auto dtype = torch_dtype(view.dtype);
  if (!dtype)
    fail("'{}': tensor '{}' has dtype {}, which LibTorch cannot hold", file_label, view.name,
         safetensors::dtype_name(view.dtype));
  const auto element = safetensors::dtype_size(view.dtype);
  if (reinterpret_cast<std::uintptr_t>(view.data) % element == 0)
    return torch::from_blob(const_cast<void*>(view.data), view.shape, torch::TensorOptions().dtype(*dtype));
  torch::Tensor copy = torch::empty(view.shape, torch::TensorOptions().dtype(*dtype));
  if (view.size_bytes) std::memcpy(copy.data_ptr(), view.data, view.size_bytes);
  return copy;
}

// Checkpoint names of old TensorFlow-converted files: LayerNorm.gamma/beta for weight/bias.
std::string modern_name(const std::string& key) {
  if (ends_with(key, "LayerNorm.gamma")) return key.substr(0, key.size() - 5) + "weight";
  if (ends_with(key, "LayerNorm.beta")) return key.substr(0, key.size() - 4) + "bias";
  return key;
}

// Keys a checkpoint may hold that no model here has as a parameter, and that transformers drops silently:
// the position_ids buffer (persistent in older versions) and the tied decoder of BertForMaskedLM.
bool silently_ignored(const std::string& key, bool model_has_pooler) {
  if (ends_with(key, "embeddings.position_ids")) return true;
  if (key == "cls.predictions.decoder.weight" || key == "cls.predictions.decoder.bias") return true;
  // BertForMaskedLM has no pooler and ignores a checkpoint's (_keys_to_ignore_on_load_unexpected = [r"pooler"]).
  if (!model_has_pooler && key.find("pooler.") != std::string::npos) return true;
  return false;
}

nlohmann::json default_tokenizer_config(const BertConfig& config, bool do_lower_case) {
  return {{"tokenizer_class", "BertTokenizer"},
          {"do_lower_case", do_lower_case},
          {"do_basic_tokenize", true},
          {"never_split", nullptr},
          {"tokenize_chinese_chars", true},
          {"strip_accents", nullptr},
          {"unk_token", "[UNK]"},
          {"sep_token", "[SEP]"},
          {"pad_token", "[PAD]"},
          {"cls_token", "[CLS]"},
          {"mask_token", "[MASK]"},
          {"model_max_length", config.max_position_embeddings},
          {"clean_up_tokenization_spaces", true}};
}

void save_folder(torch::nn::Module& module, const BertConfig& config, const std::string& architecture,
                 const fs::path& folder, const SaveOptions& options) {
  fs::create_directories(folder);
  save_weights(module, folder / "model.safetensors", options.fp16);
  BertConfig saved = config;
  saved.extra["torch_dtype"] = options.fp16 ? "float16" : "float32";
  saved.save(folder / "config.json", {architecture});

  bool have_tokenizer_config = false;
  bool have_vocab = false;
  if (options.tokenizer) {
    options.tokenizer->save(folder);
    have_vocab = have_tokenizer_config = true;
  } else if (!options.tokenizer_from.empty()) {
    const bool same_folder = fs::exists(folder) && fs::exists(options.tokenizer_from) &&
                             fs::equivalent(folder, options.tokenizer_from);
    for (const char* name : {"vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json"}) {
      const fs::path source = options.tokenizer_from / name;
      if (!fs::exists(source)) continue;
      if (!same_folder) write_file_atomic(folder / name, read_file(source));
      have_vocab = have_vocab || std::string(name) == "vocab.txt";
      have_tokenizer_config = have_tokenizer_config || std::string(name) == "tokenizer_config.json";
    }
  }
  if (!have_tokenizer_config)
    write_file_atomic(folder / "tokenizer_config.json",
                      default_tokenizer_config(config, options.do_lower_case).dump(2) + "\n");
  if (!have_vocab)
    log::event(spdlog::level::warn, "checkpoint.no_vocab",
               fmt::format("saved '{}' without vocab.txt (no tokenizer folder to copy it from); transformers will "
                           "load the model but not its tokenizer",
                           folder.string()),
               {{"folder", folder.string()}});
  log::info("checkpoint.saved", fmt::format("saved {} to '{}'", architecture, folder.string()),
            {{"folder", folder.string()}, {"architecture", architecture}, {"fp16", options.fp16}});
}

void finish_loading(torch::nn::Module& module, const LoadOptions& options) {
  if (options.dtype != torch::kFloat32 || !options.device.is_cpu()) module.to(options.device, options.dtype);
}

}  // namespace

LoadOptions LoadOptions::from_json(const nlohmann::json& json, const std::string& where) {
  const OptionReader read(json, where, {"head", "head_hidden", "num_labels", "device", "ignore_mismatched_sizes"});
  LoadOptions options;
  options.num_labels = read.integer("num_labels");
  if (const auto head = read.string("head")) {
    if (*head == "paper")
      options.head = "mlp";
    else if (*head == "hf")
      options.head = "linear";
    else
      fail("{}: head '{}': expected \"paper\" (Linear-ReLU-Linear on the pooler) or \"hf\" (one Linear)", where,
           *head);
  }
  options.head_hidden_size = read.integer("head_hidden");
  if (const auto device = read.string("device")) options.device = torch::Device(runtime::check_device(*device));
  options.ignore_mismatched_sizes = read.boolean("ignore_mismatched_sizes").value_or(false);
  return options;
}

BertConfig load_config(const fs::path& folder, const LoadOptions& options) {
  if (!fs::is_directory(folder)) fail("model folder '{}' does not exist or is not a folder", folder.string());
  if (!fs::exists(folder / "config.json"))
    fail("model folder '{}' has no config.json; a Hugging Face checkpoint folder holds config.json, "
         "model.safetensors and vocab.txt",
         folder.string());
  BertConfig config = BertConfig::load(folder / "config.json");
  if (options.num_labels) config.set_num_labels(*options.num_labels);
  if (options.head) config.head.type = *options.head;
  if (options.head_hidden_size) config.head.hidden_size = *options.head_hidden_size;
  config.validate((folder / "config.json").string() + " (with the options given)");
  return config;
}

fs::path weights_file(const fs::path& folder) {
  const fs::path safetensors_path = folder / "model.safetensors";
  if (fs::exists(safetensors_path)) return safetensors_path;
  if (fs::exists(folder / "model.safetensors.index.json"))
    fail("'{}' holds a sharded checkpoint (model.safetensors.index.json), which is not supported; re-save it as "
         "one file in Python: model.save_pretrained(dir, safe_serialization=True, max_shard_size=\"10GB\")",
         folder.string());
  if (fs::exists(folder / "pytorch_model.bin"))
    fail("'{}' holds only pytorch_model.bin (a Python pickle), which the host does not read. Convert it to "
         "model.safetensors in Python, either\n"
         "  from transformers import AutoModel\n"
         "  model = AutoModel.from_pretrained(\"{}\")  # or the BertFor... class it was saved from\n"
         "  model.save_pretrained(\"{}\", safe_serialization=True)\n"
         "or, keeping the exact keys:\n"
         "  import torch; from safetensors.torch import save_file\n"
         "  state = torch.load(\"{}/pytorch_model.bin\", map_location=\"cpu\")\n"
         "  save_file({{k: v.contiguous() for k, v in state.items()}}, \"{}/model.safetensors\", "
         "metadata={{\"format\": \"pt\"}})",
         folder.string(), folder.string(), folder.string(), folder.string(), folder.string());
  fail("'{}' has no model.safetensors", folder.string());
}

LoadReport load_weights(torch::nn::Module& module, const safetensors::File& file, const std::string& model_class,
                        bool ignore_mismatched_sizes) {
  LoadReport report;
  report.model_class = model_class;
  report.source = file.label();

  std::map<std::string, torch::Tensor> targets;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) targets.emplace(item.key(), item.value());
  for (const auto& item : module.named_buffers(/*recurse=*/true)) targets.emplace(item.key(), item.value());
  const bool model_has_prefix =
      std::any_of(targets.begin(), targets.end(), [](const auto& t) { return starts_with(t.first, kPrefix); });
  const bool model_has_pooler =
      std::any_of(targets.begin(), targets.end(), [](const auto& t) { return t.first.find("pooler.") != std::string::npos; });
  const auto& tensors = file.tensors();
  const bool file_has_prefix =
      std::any_of(tensors.begin(), tensors.end(), [](const auto& t) { return starts_with(t.name, kPrefix); });

  // transformers' base_model_prefix logic: a BertModel checkpoint ("embeddings...") loads into a model with a
  // head ("bert.embeddings..."), and a checkpoint with a head loads into a BertModel.
  const auto model_key = [&](const std::string& file_key) {
    const std::string key = modern_name(file_key);
    if (model_has_prefix && !file_has_prefix && targets.count(kPrefix + key)) return kPrefix + key;
    if (!model_has_prefix && file_has_prefix && starts_with(key, kPrefix)) return key.substr(kPrefix.size());
    return key;
  };

  torch::NoGradGuard no_grad;
  std::set<std::string> filled;
  for (const auto& view : tensors) {
    const std::string key = model_key(view.name);
    const auto target = targets.find(key);
    if (target == targets.end()) {
      if (!silently_ignored(key, model_has_pooler)) report.unexpected.push_back(view.name);
      continue;
    }
    if (!filled.insert(key).second)
      fail("'{}': tensors '{}' and another both load into '{}'", file.label(), view.name, key);
    torch::Tensor& parameter = target->second;
    if (parameter.sizes() != c10::IntArrayRef(view.shape)) {
      report.mismatched.push_back(fmt::format("size mismatch for '{}': the checkpoint has shape {}, the model has {}",
                                              key, shape_text(view.shape), shape_text(parameter.sizes())));
      continue;
    }
    const torch::Tensor source = tensor_from_view(view, file.label());
    if (c10::isFloatingType(parameter.scalar_type()) != c10::isFloatingType(source.scalar_type()))
      fail("'{}': tensor '{}' is {}, which cannot load into the {} parameter '{}'", file.label(), view.name,
           safetensors::dtype_name(view.dtype), c10::toString(parameter.scalar_type()), key);
    if (source.scalar_type() != parameter.scalar_type())
      report.converted.push_back(fmt::format("{}: {} -> {}", key, safetensors::dtype_name(view.dtype),
                                             c10::toString(parameter.scalar_type())));
    parameter.copy_(source);
    report.loaded.push_back(key);
  }
  for (const auto& [key, tensor] : targets)
    if (!filled.count(key)) report.missing.push_back(key);
  if (!report.mismatched.empty() && !ignore_mismatched_sizes) {
    std::string lines;
    for (const auto& line : report.mismatched) lines += "\n  " + line;
    fail("error loading '{}' into {}:{}\nCheck num_labels and the model config, or load with "
         "ignore_mismatched_sizes to re-initialise these weights",
         file.label(), model_class, lines);
  }

  const std::string where = file.label();
  if (!report.unexpected.empty())
    log::event(spdlog::level::warn, "checkpoint.unexpected_weights",
               fmt::format("Some weights of the model checkpoint at {} were not used when initializing {}: {}\n"
                           "- This IS expected if you are initializing {} from the checkpoint of a model trained on "
                           "another task or with another architecture.",
                           where, model_class, join(report.unexpected), model_class),
               {{"checkpoint", where}, {"model_class", model_class}, {"keys", report.unexpected}});
  if (!report.missing.empty())
    log::event(spdlog::level::warn, "checkpoint.newly_initialized",
               fmt::format("Some weights of {} were not initialized from the model checkpoint at {} and are newly "
                           "initialized: {}\nYou should probably TRAIN this model on a down-stream task to be able to "
                           "use it for predictions and inference.",
                           model_class, where, join(report.missing)),
               {{"checkpoint", where}, {"model_class", model_class}, {"keys", report.missing}});
  if (!report.mismatched.empty())
    log::event(spdlog::level::warn, "checkpoint.mismatched_sizes",
               fmt::format("Some weights of {} were not initialized from the model checkpoint at {} and are newly "
                           "initialized because the shapes did not match: {}",
                           model_class, where, join(report.mismatched)),
               {{"checkpoint", where}, {"model_class", model_class}, {"keys", report.mismatched}});
  if (report.unexpected.empty() && report.missing.empty() && report.mismatched.empty())
    log::info("checkpoint.loaded",
              fmt::format("All the weights of {} were initialized from the model checkpoint at {}.", model_class,
                          where),
              {{"checkpoint", where}, {"model_class", model_class}, {"tensors", report.loaded.size()}});
  if (!report.converted.empty())
    log::info("checkpoint.converted",
              fmt::format("converted {} weights of {} to the model's dtype ({})", report.converted.size(), where,
                          report.converted.front()),
              {{"checkpoint", where}, {"keys", report.converted}});
  return report;
}

BertModel load_bert_model(const fs::path& folder, const LoadOptions& options, LoadReport* report) {
  BertModel model(load_config(folder, options));
  const auto file = safetensors::File::open(weights_file(folder));
  LoadReport result = load_weights(*model, file, "BertModel", options.ignore_mismatched_sizes);
  finish_loading(*model, options);
  if (report) *report = std::move(result);
  return model;
}

BertForSequenceClassification load_sequence_classifier(const fs::path& folder, const LoadOptions& options,
                                                       LoadReport* report) {
  BertForSequenceClassification model(load_config(folder, options));
  const auto file = safetensors::File::open(weights_file(folder));
  LoadReport result = load_weights(*model, file, "BertForSequenceClassification", options.ignore_mismatched_sizes);
  finish_loading(*model, options);
  if (report) *report = std::move(result);
  return model;
}

BertForMaskedLM load_masked_lm(const fs::path& folder, const LoadOptions& options, LoadReport* report) {
  BertForMaskedLM model(load_config(folder, options));
  const auto file = safetensors::File::open(weights_file(folder));
  LoadReport result = load_weights(*model, file, "BertForMaskedLM", options.ignore_mismatched_sizes);
  finish_loading(*model, options);
  if (report) *report = std::move(result);
  return model;
}

void save_weights(torch::nn::Module& module, const fs::path& file, bool fp16) {
  const torch::Dtype dtype = fp16 ? torch::kFloat16 : torch::kFloat32;
  std::vector<std::pair<std::string, torch::Tensor>> host_tensors;
  for (const auto& item : module.named_parameters(/*recurse=*/true))
    host_tensors.emplace_back(item.key(), item.value().detach().to(torch::kCPU, dtype).contiguous());
  for (const auto& item : module.named_buffers(/*recurse=*/true)) {
    torch::Tensor buffer = item.value().detach().to(torch::kCPU);
    if (c10::isFloatingType(buffer.scalar_type())) buffer = buffer.to(dtype);
    host_tensors.emplace_back(item.key(), buffer.contiguous());
  }
  std::vector<safetensors::TensorToWrite> to_write;
  to_write.reserve(host_tensors.size());
  for (const auto& [name, tensor] : host_tensors) {
    safetensors::DType stored;
    switch (tensor.scalar_type()) {
      case torch::kFloat32: stored = safetensors::DType::F32; break;
      case torch::kFloat16: stored = safetensors::DType::F16; break;
      case torch::kInt64: stored = safetensors::DType::I64; break;
      default: fail("cannot save '{}' of dtype {}", name, c10::toString(tensor.scalar_type()));
    }
    to_write.push_back({name, stored, tensor.sizes().vec(), tensor.data_ptr(), tensor.nbytes()});
  }
  safetensors::write(file, std::move(to_write), {{"format", "pt"}});
}

void save_pretrained(BertForSequenceClassification& model, const fs::path& folder, const SaveOptions& options) {
  save_folder(*model, model->config, "BertForSequenceClassification", folder, options);
}

void save_pretrained(BertForMaskedLM& model, const fs::path& folder, const SaveOptions& options) {
  save_folder(*model, model->config, "BertForMaskedLM", folder, options);
}

void save_pretrained(BertModel& model, const fs::path& folder, const SaveOptions& options) {
  save_folder(*model, model->config, "BertModel", folder, options);
}

}  // namespace ts
