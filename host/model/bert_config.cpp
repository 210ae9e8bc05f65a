#include "model/bert_config.h"

#include <algorithm>
#include <set>

#include "core/error.h"
#include "core/fs.h"

namespace ts {

namespace {

const std::set<std::string>& known_activations() {
  static const std::set<std::string> names{"gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu", "swish", "tanh"};
  return names;
}

std::string join(const std::set<std::string>& names) {
  std::string text;
  for (const auto& name : names) text += (text.empty() ? "" : ", ") + name;
  return text;
}

// Reads `key` into `out` if present; a wrong type is an error naming the source and the key.
void read_int(const nlohmann::json& json, const char* key, int64_t& out, const std::string& source) {
  const auto found = json.find(key);
  if (found == json.end()) return;
  if (!found->is_number_integer()) fail("{}: \"{}\" must be an integer, not {}", source, key, found->dump());
  out = found->get<int64_t>();
}

void read_double(const nlohmann::json& json, const char* key, double& out, const std::string& source) {
  const auto found = json.find(key);
  if (found == json.end()) return;
  if (!found->is_number()) fail("{}: \"{}\" must be a number, not {}", source, key, found->dump());
  out = found->get<double>();
}

void read_string(const nlohmann::json& json, const char* key, std::string& out, const std::string& source) {
  const auto found = json.find(key);
  if (found == json.end()) return;
  if (!found->is_string()) fail("{}: \"{}\" must be a string, not {}", source, key, found->dump());
  out = found->get<std::string>();
}

}  // namespace

void BertConfig::set_num_labels(int64_t n) {
  if (n < 1) fail("num_labels must be at least 1, not {}", n);
  if (num_labels() == n) return;
  id2label.clear();
  for (int64_t i = 0; i < n; ++i) id2label.push_back("LABEL_" + std::to_string(i));
}

BertConfig BertConfig::from_json(const nlohmann::json& json, const std::string& source) {
  if (!json.is_object()) fail("{}: a model config must be a JSON object", source);
  BertConfig config;
  config.extra = json;
  const auto model_type = json.find("model_type");
  if (model_type != json.end() && model_type->is_string() && *model_type != "bert")
    fail("{}: model_type is '{}'; only 'bert' models are supported", source, model_type->get<std::string>());

  read_int(json, "vocab_size", config.vocab_size, source);
  read_int(json, "hidden_size", config.hidden_size, source);
  read_int(json, "num_hidden_layers", config.num_hidden_layers, source);
  read_int(json, "num_attention_heads", config.num_attention_heads, source);
  read_int(json, "intermediate_size", config.intermediate_size, source);
  read_string(json, "hidden_act", config.hidden_act, source);
  read_double(json, "hidden_dropout_prob", config.hidden_dropout_prob, source);
  read_double(json, "attention_probs_dropout_prob", config.attention_probs_dropout_prob, source);
  read_int(json, "max_position_embeddings", config.max_position_embeddings, source);
  read_int(json, "type_vocab_size", config.type_vocab_size, source);
  read_double(json, "initializer_range", config.initializer_range, source);
  read_double(json, "layer_norm_eps", config.layer_norm_eps, source);
  read_string(json, "position_embedding_type", config.position_embedding_type, source);

  if (const auto pad = json.find("pad_token_id"); pad != json.end()) {
    if (pad->is_null()) {
      config.pad_token_id.reset();
    } else {
      int64_t value = 0;
      read_int(json, "pad_token_id", value, source);
      config.pad_token_id = value;
    }
  }
  if (const auto dropout = json.find("classifier_dropout"); dropout != json.end() && !dropout->is_null()) {
    double value = 0;
    read_double(json, "classifier_dropout", value, source);
    config.classifier_dropout = value;
  }

  // Labels: id2label wins over num_labels, as in PretrainedConfig.
  if (const auto labels = json.find("id2label"); labels != json.end() && !labels->is_null()) {
    if (!labels->is_object() || labels->empty())
      fail("{}: \"id2label\" must be a non-empty object {{\"0\": \"name\", ...}}", source);
    std::vector<std::string> names(labels->size());
    std::vector<bool> seen(labels->size(), false);
    for (const auto& [key, value] : labels->items()) {
      std::size_t used = 0;
      long long id = -1;
      try {
        id = std::stoll(key, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != key.size() || id < 0 || id >= static_cast<long long>(names.size()))
        fail("{}: \"id2label\" has key '{}'; keys must be the ids 0..{}", source, key, names.size() - 1);
      if (!value.is_string()) fail("{}: \"id2label\".\"{}\" must be a string", source, key);
      names[id] = value.get<std::string>();
      seen[id] = true;
    }
    if (std::find(seen.begin(), seen.end(), false) != seen.end())
      fail("{}: \"id2label\" must name every id 0..{}", source, names.size() - 1);
    config.id2label = std::move(names);
  } else if (const auto count = json.find("num_labels"); count != json.end()) {
    int64_t n = 0;
    read_int(json, "num_labels", n, source);
    config.set_num_labels(n);
  }

  if (const auto head = json.find("twostage_head"); head != json.end() && !head->is_null()) {
    if (!head->is_object()) fail("{}: \"twostage_head\" must be an object {{\"type\": ..., \"hidden_size\": ...}}", source);
    read_string(*head, "type", config.head.type, source + " twostage_head");
    read_int(*head, "hidden_size", config.head.hidden_size, source + " twostage_head");
  }
  config.validate(source);
  return config;
}

void BertConfig::validate(const std::string& source) const {
  const auto positive = [&](const char* key, int64_t value) {
    if (value < 1) fail("{}: \"{}\" must be positive, not {}", source, key, value);
  };
  positive("vocab_size", vocab_size);
  positive("hidden_size", hidden_size);
  positive("num_hidden_layers", num_hidden_layers);
  positive("num_attention_heads", num_attention_heads);
  positive("intermediate_size", intermediate_size);
  positive("max_position_embeddings", max_position_embeddings);
  positive("type_vocab_size", type_vocab_size);
  if (hidden_size % num_attention_heads != 0)
    fail("{}: hidden_size {} is not a multiple of num_attention_heads {}", source, hidden_size, num_attention_heads);
  if (!known_activations().count(hidden_act))
    fail("{}: hidden_act '{}' is not supported (supported: {})", source, hidden_act, join(known_activations()));
  if (position_embedding_type != "absolute")
    fail("{}: position_embedding_type '{}' is not supported; only 'absolute' is", source, position_embedding_type);
  const auto probability = [&](const char* key, double value) {
    if (!(value >= 0.0 && value < 1.0)) fail("{}: \"{}\" must be in [0, 1), not {}", source, key, value);
  };
  probability("hidden_dropout_prob", hidden_dropout_prob);
  probability("attention_probs_dropout_prob", attention_probs_dropout_prob);
  if (classifier_dropout) probability("classifier_dropout", *classifier_dropout);
  if (!(layer_norm_eps > 0.0)) fail("{}: \"layer_norm_eps\" must be positive, not {}", source, layer_norm_eps);
  if (pad_token_id && (*pad_token_id < 0 || *pad_token_id >= vocab_size))
    fail("{}: pad_token_id {} is outside the vocabulary (size {})", source, *pad_token_id, vocab_size);
  if (id2label.empty()) fail("{}: a classifier needs at least one label", source);
  if (head.type != "linear" && head.type != "mlp")
    fail("{}: twostage_head type '{}' is not supported (supported: linear, mlp)", source, head.type);
  if (head.type == "mlp" && head.hidden_size < 1)
    fail("{}: twostage_head hidden_size must be positive, not {}", source, head.hidden_size);
}

BertConfig BertConfig::load(const std::filesystem::path& path) {
  const std::filesystem::path file = std::filesystem::is_directory(path) ? path / "config.json" : path;
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(read_file(file));
  } catch (const nlohmann::json::exception& error) {
    fail("'{}' is not valid JSON: {}", file.string(), error.what());
  }
  return from_json(json, file.string());
}

nlohmann::json BertConfig::to_json(const std::vector<std::string>& architectures) const {
  nlohmann::json json = extra.is_object() ? extra : nlohmann::json::object();
  json["model_type"] = "bert";
  if (!architectures.empty()) json["architectures"] = architectures;
  json["vocab_size"] = vocab_size;
  json["hidden_size"] = hidden_size;
  json["num_hidden_layers"] = num_hidden_layers;
  json["num_attention_heads"] = num_attention_heads;
  json["intermediate_size"] = intermediate_size;
  json["hidden_act"] = hidden_act;
  json["hidden_dropout_prob"] = hidden_dropout_prob;
  json["attention_probs_dropout_prob"] = attention_probs_dropout_prob;
  json["max_position_embeddings"] = max_position_embeddings;
  json["type_vocab_size"] = type_vocab_size;
  json["initializer_range"] = initializer_range;
  json["layer_norm_eps"] = layer_norm_eps;
  json["position_embedding_type"] = position_embedding_type;
  json["pad_token_id"] = pad_token_id ? nlohmann::json(*pad_token_id) : nlohmann::json(nullptr);
  json["classifier_dropout"] = classifier_dropout ? nlohmann::json(*classifier_dropout) : nlohmann::json(nullptr);
  nlohmann::json id_to_label = nlohmann::json::object();
  nlohmann::json label_to_id = nlohmann::json::object();
  for (std::size_t id = 0; id < id2label.size(); ++id) {
    id_to_label[std::to_string(id)] = id2label[id];
    label_to_id[id2label[id]] = id;
  }
  json["id2label"] = id_to_label;
  json["label2id"] = label_to_id;
  json.erase("num_labels");  // implied by id2label; a stale count would contradict it
  if (head.type == "linear") {
    json.erase("twostage_head");
  } else {
    json["twostage_head"] = {{"type", head.type}, {"hidden_size", head.hidden_size}};
  }
  return json;
}

void BertConfig::save(const std::filesystem::path& file, const std::vector<std::string>& architectures) const {
  write_file_atomic(file, to_json(architectures).dump(2) + "\n");
}

}  // namespace ts
