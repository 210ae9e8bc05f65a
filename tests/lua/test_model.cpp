// Models in Lua: the golden Hugging Face classifier gives transformers' logits, pooled output and [CLS] hidden state
// through the binding too.
#include <unistd.h>

#include <catch2/catch.hpp>

#include "runtime.h"

TEST_CASE("a classifier loaded in Lua reproduces transformers' logits, pooled output and [CLS] state, and saves a loadable folder") {
  ts::lua::RunOptions options;
  options.out = std::filesystem::temp_directory_path() / ("twostage-model-" + std::to_string(::getpid()));
  ts::lua::Runtime runtime(options);
  runtime.run_state().write_policy.allow_tree(*options.out);
  // The fixtures a test reads, as a user would name them on the command line.
  runtime.run_state().read_policy.allow_tree("../shared");
  runtime.run_state().read_policy.allow_tree("tests");
  lua_State* L = runtime.state();
  lua_pushstring(L, "out_dir");
  lua_pushstring(L, options.out->c_str());
  lua_rawset(L, LUA_GLOBALSINDEX);
  runtime.execute(R"(
    local ts = require "twostage"
    local model, report = ts.load_classifier("../shared/golden/bert-classifier")
    assert(#report.missing == 0 and #report.unexpected == 0)
    model:eval()
    local checked = 0
    for line in io.lines("../shared/golden/bert-classifier/expected.jsonl") do
      local case = ts.json_decode(line)
      local ids = ts.tensor({case.ids}, "int64")
      local logits, pooled, hidden = model:forward({input_ids = ids, attention_mask = ts.ones(1, #case.ids, "int64")})
      local function check(name, got, expected)
        for i = 1, #expected do
          local difference = math.abs(got[i] - expected[i])
          assert(difference < 1e-4, ("%s %d differs by %g"):format(name, i, difference))
        end
      end
      check("logit", logits[1], case.logits)
      check("pooled", pooled[1], case.pooled)
      assert(hidden:size(2) == #case.ids)
      check("[CLS] hidden", hidden[1][1], case.cls_hidden)
      checked = checked + 1
    end
    assert(checked == 40, checked)

    local names = model:parameters()
    assert(names[1] == "bert.embeddings.word_embeddings.weight", names[1])
    local everything = model:trainable_count()
    local trainable = model:set_trainable({"classifier", "bert.pooler", "bert.encoder.layer.1"})
    assert(trainable == 2 + 2 + 16, "classifier and pooler weights and biases, 16 tensors in layer 1: " .. trainable)
    assert(model:trainable_count() < everything / 2)
    local ok, message = pcall(model.set_trainable, model, {"bert.encoder.layer.7"})
    assert(not ok and message:find("layer.7"), message)

    model:save(out_dir .. "/saved")
    local again = ts.load_classifier(out_dir .. "/saved")
    again:eval()
    local batch = {input_ids = ts.tensor({{101, 2023, 102}}, "int64")}
    assert(model:forward(batch) == again:forward(batch), "load, save, load gives identical outputs")

    local small = ts.classifier_from_config({vocab_size = 100, hidden_size = 32, num_hidden_layers = 2,
      num_attention_heads = 2, intermediate_size = 64}, {num_labels = 3, head = "paper"})
    assert(small:forward({input_ids = ts.tensor({{1, 5, 2}}, "int64")}):size(2) == 3)
    assert(small:parameters({"classifier"})[1] == "classifier.0.weight")
  )");
}
