// The training building blocks as a recipe sees them: datasets and their errors, imbalance, loaders, losses,
// metrics, and fit() with and without a cached trunk.
#include <unistd.h>

#include <catch2/catch.hpp>

#include "runtime.h"

namespace {

// Runs Lua in a fresh runtime whose run folder is a temporary directory (global `out_dir`).
void lua(const std::string& source) {
  ts::lua::RunOptions options;
  options.out = std::filesystem::temp_directory_path() / ("twostage-training-" + std::to_string(::getpid()));
  ts::lua::Runtime runtime(options);
  runtime.run_state().write_policy.allow_tree(*options.out);
  // The fixtures a test reads, as a user would name them on the command line.
  runtime.run_state().read_policy.allow_tree("../shared");
  runtime.run_state().read_policy.allow_tree("tests");
  std::filesystem::create_directories(*options.out);
  lua_State* L = runtime.state();
  // rawset: strict globals refuse a plain assignment of an undeclared global.
  lua_pushstring(L, "out_dir");
  lua_pushstring(L, options.out->c_str());
  lua_rawset(L, LUA_GLOBALSINDEX);
  runtime.execute("local ts = require 'twostage'\n" + source);
}

}  // namespace

TEST_CASE("SST-2 at rate 0.2 keeps 7,513 + 37,569 rows, the same rows every time") {
  lua(R"(
    local train = ts.read_table("data/sst2/train.tsv", { text = "sentence" })
    assert(#train == 67349 and train:classes()[1] == "0")
    local counts = train:class_counts()
    assert(counts[1] == 29780 and counts[2] == 37569)
    local imbalanced, rows = ts.downsample(train, { rate = 0.2 })
    counts = imbalanced:class_counts()
    assert(counts[1] == 7513 and counts[2] == 37569, counts[1] .. " " .. counts[2])
    assert(#rows == 45082 and #imbalanced == 45082)
    local again, rows_again = ts.downsample(train, { rate = 0.2 })
    for i = 1, #rows do assert(rows[i] == rows_again[i]) end
    assert(imbalanced:text(1) == train:text(rows[1]) and imbalanced:label(1) == train:label(rows[1]))
    -- a different seed picks different rows
    local _, other = ts.downsample(train, { rate = 0.2, seed = 7 })
    local same = 0
    for i = 1, 100 do if other[i] == rows[i] then same = same + 1 end end
    assert(same < 10)
  )");
}

TEST_CASE("every bad input to read_table is an error naming the file and what is wrong") {
  lua(R"(
    local function fails(pattern, path, options)
      local ok, message = pcall(ts.read_table, path, options)
      assert(not ok, "expected an error for " .. path)
      assert(message:find(pattern, 1, true), "'" .. message .. "' lacks '" .. pattern .. "'")
    end
    local function file(name, text)
      local path = out_dir .. "/" .. name
      ts.write_file(path, text)
      return path
    end
    fails("sentence", "data/sst2/dev.tsv", { text = "text" })            -- the missing column lists those present
    fails("no_such_file.csv", "no_such_file.csv")
    fails(":3:", file("bad_label.csv", "text,label\na,pos\nb,maybe\n"), { classes = { "neg", "pos" } })
    fails(":2:", file("empty.csv", "text,label\n ,1\nb,0\n"))
    fails(":2:", file("quote.csv", "text,label\n\"open,1\n"))
    local kept = ts.read_table(file("empty_drop.csv", "text,label\n ,1\nb,0\n"), { empty_text = "drop" })
    assert(#kept == 1 and kept:dropped_empty() == 1)
    local strings = ts.read_table(file("names.jsonl", '{"text": "x", "label": "sports"}\n{"text": "y", "label": "art"}\n'))
    assert(strings:classes()[1] == "art" and strings:label(1) == 1)
  )");
}

TEST_CASE("class-balanced weights and LDAM margins at rate 0.2, and the weighted-mean reduction") {
  lua(R"(
    local loss = ts.loss { kind = "ldam", counts = { 7513, 37569 }, weights = "effective", beta = 0.9999,
                           max_margin = 0.5, scale = 1 }
    local d = loss:describe()
    local function near(a, b, tolerance) return math.abs(a - b) < (tolerance or 1e-4) end
    assert(near(d.weights[1], 1.2979) and near(d.weights[2], 0.7021), d.weights[1] .. " " .. d.weights[2])
    assert(near(d.margins[1], 0.5) and near(d.margins[2], 0.3344), d.margins[2])
    -- One row of each class, logits zero: z' = -m_y on the true class; ℓ_i = log(1 + e^{-m_y}) ... weighted mean.
    local logits = ts.zeros(2, 2)
    local labels = ts.tensor({ 0, 1 }, "int64")
    local l0 = math.log(1 + math.exp(-0.5)) + 0.5 - math.log(1 + math.exp(-0.5)) * 0   -- -log softmax(-0.5, 0)[0]
    l0 = -(-0.5 - math.log(math.exp(-0.5) + 1))
    local l1 = -(-d.margins[2] - math.log(math.exp(-d.margins[2]) + 1))
    local expected = (d.weights[1] * l0 + d.weights[2] * l1) / (d.weights[1] + d.weights[2])
    assert(near(loss(logits, labels):item(), expected, 1e-6), loss(logits, labels):item() .. " vs " .. expected)
    local ok, message = pcall(ts.loss, { kind = "ldam" })
    assert(not ok and message:find("counts"), message)
  )");
}

TEST_CASE("metrics from a hand-computed confusion matrix") {
  lua(R"(
    -- truth 0 0 0 1 1 2; predicted 0 0 1 1 2 2 -> [[2,1,0],[0,1,1],[0,0,1]]
    local m = ts.metrics({ 0, 0, 0, 1, 1, 2 }, { 0, 0, 1, 1, 2, 2 }, { num_classes = 3 })
    assert(m.confusion_matrix[1][1] == 2 and m.confusion_matrix[1][2] == 1 and m.confusion_matrix[2][3] == 1)
    assert(math.abs(m.accuracy - 4 / 6) < 1e-12)
    -- F1: class 0 p=1 r=2/3 -> 0.8; class 1 p=1/2 r=1/2 -> 0.5; class 2 p=1/2 r=1 -> 2/3
    assert(math.abs(m.f1_per_class[1] - 0.8) < 1e-12 and math.abs(m.f1_per_class[3] - 2 / 3) < 1e-12)
    assert(math.abs(m.macro_f1 - (0.8 + 0.5 + 2 / 3) / 3) < 1e-12)
    assert(math.abs(m.balanced_accuracy - (2 / 3 + 0.5 + 1) / 3) < 1e-12)
    local from_logits = ts.metrics({ 1, 0 }, ts.tensor({ { 0, 1 }, { 0, 1 } }))
    assert(from_logits.accuracy == 0.5 and math.abs(from_logits.log_loss - math.log(1 + math.exp(1))) > 0)
  )");
}

TEST_CASE("a loader covers every row once per epoch, pads to the longest row, and balances classes when asked") {
  lua(R"(
    local texts, labels = {}, {}
    for i = 1, 50 do
      texts[i] = string.rep("word ", i % 7 + 1)
      labels[i] = i <= 40 and 0 or 1
    end
    local data = ts.dataset { texts = texts, labels = labels, classes = { "major", "minor" } }
    local tok = ts.tokenizer("data/vocab/bert-base-uncased")
    local loader = ts.loader(data, tok, { batch_size = 8, seed = 3, bucket = true })
    assert(loader:batches(1) == 7)
    local seen, longest_pad = {}, 0
    for batch in loader:epoch(1) do
      local width = batch.input_ids:size(2)
      local row_lengths = batch.attention_mask:sum(2):totable()
      local longest = 0
      for _, n in ipairs(row_lengths) do longest = math.max(longest, n) end
      assert(longest == width, "padded to the longest row of the batch")
      for _, row in ipairs(batch.rows) do assert(not seen[row]); seen[row] = true end
    end
    for i = 1, 50 do assert(seen[i], "row " .. i) end

    local balanced = ts.loader(data, tok, { batch_size = 10, sampler = "balanced", seed = 1, num_samples = 2000 })
    local minority = 0
    for batch in balanced:epoch(1) do minority = minority + batch.labels:sum() end
    assert(math.abs(minority / 2000 - 0.5) < 0.05, minority)
  )");
}

TEST_CASE("fit learns a separable task, and with cache_frozen the top trains to the same weights") {
  lua(R"(
    local texts, labels = {}, {}
    for i = 1, 64 do
      local positive = i % 2 == 0
      texts[i] = (positive and "great wonderful film " or "awful boring film ") .. string.rep("and ", i % 5)
      labels[i] = positive and 1 or 0
    end
    local data = ts.dataset { texts = texts, labels = labels }
    local tok = ts.tokenizer("data/vocab/bert-base-uncased")
    local config = { vocab_size = 30522, hidden_size = 32, num_hidden_layers = 2, num_attention_heads = 2,
                     intermediate_size = 64, hidden_dropout_prob = 0, attention_probs_dropout_prob = 0 }

    local function train_top(cache_frozen)
      ts.manual_seed(5)
      local model = ts.classifier_from_config(config, { num_labels = 2, head = "paper" })
      local loader = ts.loader(data, tok, { batch_size = 8, seed = 9 })
      local history = ts.train.fit(model, loader, { name = "stage 1", epochs = 10, lr = 3e-3,
        loss = ts.loss { kind = "ce" }, trainable = model:top_layers(1), cache_frozen = cache_frozen })
      local eval_loader = ts.loader(data, tok, { batch_size = 16, sampler = "sequential" })
      local metrics, logits = ts.train.evaluate(model, eval_loader)
      return metrics, logits, history
    end
    local plain, plain_logits, history = train_top(false)
    local cached, cached_logits, cached_history = train_top(true)
    assert(history.steps == 80 and cached_history.cached_trunk_bytes > 0)
    -- Where the stage's time went, per batch: each phase counted, adding up to the total, within the stage's time.
    local phases, sum = history.ms_per_batch, 0
    for _, phase in ipairs { "batch", "forward", "loss", "backward", "optimizer", "collect", "progress" } do
      assert(phases[phase] and phases[phase] >= 0, "phase " .. phase)
      sum = sum + phases[phase]
    end
    assert(phases.forward > 0 and phases.backward > 0 and phases.optimizer > 0, "the step's phases take time")
    assert(math.abs(sum - phases.total) < 1e-9 * math.max(1, sum), "the phases add up to the total")
    assert(phases.total * 80 <= history.seconds * 1e3 * 1.001, "within the stage's own time")
    assert(plain.accuracy == 1, "learns the task: " .. plain.accuracy)
    local difference = (plain_logits - cached_logits):abs():max()
    assert(difference < 1e-3, "cached and uncached training differ by " .. difference)
  )");
}

TEST_CASE("fit keeps the best validation weights and stops early") {
  lua(R"(
    local texts, labels = {}, {}
    for i = 1, 40 do texts[i] = i % 2 == 0 and "good" or "bad"; labels[i] = i % 2 end
    local data = ts.dataset { texts = texts, labels = labels }
    local tok = ts.tokenizer("data/vocab/bert-base-uncased")
    ts.manual_seed(1)
    local model = ts.classifier_from_config({ vocab_size = 30522, hidden_size = 16, num_hidden_layers = 1,
      num_attention_heads = 2, intermediate_size = 32 }, { num_labels = 2 })
    local validation = ts.loader(data, tok, { sampler = "sequential" })
    local history = ts.train.fit(model, ts.loader(data, tok, { batch_size = 8 }), { name = "fit", epochs = 20,
      lr = 5e-3, loss = ts.loss { kind = "ce" }, validation = validation, patience = 2, keep_best = true,
      monitor = { metric = "log_loss", mode = "min" } })
    assert(#history.validations < 20 or history.best, "validated each epoch")
    local best = history.best.value
    local metrics = ts.train.evaluate(model, validation)
    assert(math.abs(metrics.log_loss - best) < 1e-5, "the best weights were restored")
  )");
}

TEST_CASE("optimizer:step{clip} returns the norm and updates as clip_grad_norm then step") {
  lua(R"(
    local data = ts.dataset { texts = { "a good film", "a bad film", "fine", "dull and long" }, labels = { 1, 0, 1, 0 } }
    local tok = ts.tokenizer("data/vocab/bert-base-uncased")
    local config = { vocab_size = 30522, hidden_size = 16, num_hidden_layers = 1, num_attention_heads = 2,
                     intermediate_size = 32, hidden_dropout_prob = 0, attention_probs_dropout_prob = 0 }
    local loss_fn = ts.loss { kind = "ce" }
    local function trained(fused)
      ts.manual_seed(3)
      local model = ts.classifier_from_config(config, { num_labels = 2 })
      local optimizer = ts.optimizer(model, { kind = "adamw", lr = 1e-2, weight_decay = 0.01 })
      local loader = ts.loader(data, tok, { batch_size = 4, sampler = "sequential" })
      local norms = {}
      for _ = 1, 3 do
        for batch in loader:epoch(1) do
          loss_fn(model:forward(batch), batch.labels):backward()
          if fused then
            norms[#norms + 1] = optimizer:step { clip = 1e-4 }
          else
            norms[#norms + 1] = optimizer:clip_grad_norm(1e-4)
            optimizer:step()
          end
          optimizer:zero_grad()
        end
      end
      for batch in loader:epoch(1) do return model:forward(batch), norms end
    end
    local fused_logits, fused_norms = trained(true)
    local separate_logits, separate_norms = trained(false)
    for i = 1, 3 do
      assert(fused_norms[i] == separate_norms[i], "norm " .. i .. ": " .. fused_norms[i] .. " " .. separate_norms[i])
      assert(separate_norms[i] > 1e-4, "the test clips: " .. separate_norms[i])
    end
    assert((fused_logits - separate_logits):abs():max() == 0, "the same update, bit for bit")
  )");
}

TEST_CASE("a misspelt option key is an error naming it and the known keys, in every bound constructor and method") {
  lua(R"(
    local function refuses(where, wrong, call)
      local ok, message = pcall(call)
      assert(not ok, where .. ": {" .. wrong .. " = ...} was accepted")
      assert(message:find(where .. ": unknown option '" .. wrong .. "' (known: ", 1, true), message)
    end
    local tok = ts.tokenizer("data/vocab/bert-base-uncased")
    local data = ts.dataset { texts = { "a good film", "a bad film", "fine" }, labels = { 1, 0, 1 },
                              classes = { "neg", "pos" } }
    local config = { vocab_size = 30522, hidden_size = 16, num_hidden_layers = 1, num_attention_heads = 2,
                     intermediate_size = 32, max_position_embeddings = 64 }
    local model = ts.classifier_from_config(config, { num_labels = 2 })
    local optimizer = ts.optimizer(model, { lr = 1e-3 })
    refuses("ts.read_table", "txt", function() return ts.read_table("data/sst2/dev.tsv", { txt = "sentence" }) end)
    refuses("ts.dataset", "label", function() return ts.dataset { texts = { "x" }, label = { 1 }, classes = { "a" } } end)
    refuses("ts.downsample", "ratio", function() return ts.downsample(data, { ratio = 0.2 }) end)
    refuses("ts.long_tail", "imbalanced", function() return ts.long_tail(data, { imbalanced = 10 }) end)
    refuses("ts.split", "fractoin", function() return ts.split(data, { fractoin = 0.5 }) end)
    refuses("ts.loader", "batchsize", function() return ts.loader(data, tok, { batchsize = 32 }) end)
    refuses("loader:cache_trunk", "batch", function() return ts.loader(data, tok):cache_trunk(model, 1, { batch = 8 }) end)
    refuses("tokenizer:batch", "max_len", function() return tok:batch({ "x" }, { max_len = 8 }) end)
    refuses("ts.classifier_from_config", "labels", function() return ts.classifier_from_config(config, { labels = 2 }) end)
    refuses("ts.load_classifier", "heads", function() return ts.load_classifier("data/models/all-minilm-l6-v2", { heads = "hf" }) end)
    refuses("model:save", "half", function() return model:save(out_dir .. "/saved", { half = true }) end)
    refuses("ts.loss", "margin", function() return ts.loss { kind = "ldam", counts = { 1, 2 }, margin = 0.5 } end)
    refuses("ts.optimizer", "weight_decy", function() return ts.optimizer(model, { weight_decy = 0.01 }) end)
    refuses("optimizer:step", "clip_norm", function() return optimizer:step { clip_norm = 1 } end)
    refuses("ts.schedule", "warmup", function() return ts.schedule(optimizer, { total_steps = 10, warmup = 1 }) end)
    refuses("ts.metrics", "classes", function() return ts.metrics({ 1, 2 }, { 1, 1 }, { classes = 2 }) end)
    refuses("ts.masked_lm", "devices", function() return ts.masked_lm(config, { devices = "cpu" }) end)
    refuses("ts.masker", "prob", function() return ts.masker(tok, { prob = 0.15 }) end)
    refuses("ts.mlm_corpus", "max_len", function() return ts.mlm_corpus(tok, { data }, { max_len = 16 }) end)
    refuses("corpus:word_vectors", "dim", function()
      return ts.mlm_corpus(tok, { data }, { max_length = 16 }):word_vectors(tok, { dim = 8 })
    end)
    refuses("contextual_augmenter", "modle", function() return ts.contextual_augmenter { modle = "x" } end)
    refuses("eda", "alpah", function() return ts.eda { alpah = 0.1 } end)
    refuses("llm_client", "modle", function() return ts.llm_client { modle = "x" } end)
    refuses("paraphrase_filter", "promt", function() return ts.paraphrase_filter { promt = "x" } end)
    -- the filter recognises an echo of the prompt it is given
    local own = ts.paraphrase_filter { prompt = "Paraphrase this movie review and keep its sentiment: {text}" }
    local _, reason = own:add("a fine film", "Paraphrase this movie review and keep it a fine film")
    assert(reason == "echoed_prompt", tostring(reason))
    -- the right keys still pass
    ts.loader(data, tok, { batch_size = 2, max_length = 16, sampler = "random", seed = 3 })
    ts.split(ts.dataset { texts = { "a", "b", "c", "d" }, labels = { 0, 0, 1, 1 }, classes = { "x", "y" } },
             { fraction = 0.5, seed = 1 })
  )");
}

TEST_CASE("recipes and scripts derive seeds through the host's named streams, not arithmetic of their own") {
  lua(R"(
    local streams = ts.seed_streams
    assert(streams.stage_loader(7, 2) == 7002)
    assert(streams.pretraining_dropout(42, 5) == 42 * 1000003 + 5)
    assert(streams.pretraining_replacements(42, 5) == 42 * 1000003 + 5 + 0x5eed)
    assert(streams.paraphrase_request(1000, 2, 3) == 1006)
    assert(streams.training_masks(42, 3) ~= streams.heldout_masks(42, 3))
    local ok, message = pcall(streams.stage_loader, -1, 1)
    assert(not ok and message:find("seed %-1 must be a whole number"), message)
  )");
}

TEST_CASE("the model says what its top layers are and where training starts, for the stage-1 selection and the cache") {
  lua(R"(
    local model = ts.classifier_from_config({ vocab_size = 100, hidden_size = 16, num_hidden_layers = 3,
      num_attention_heads = 2, intermediate_size = 32 }, { num_labels = 2 })
    local top = model:top_layers(1)
    assert(#top == 3 and top[1] == "bert.encoder.layer.2" and top[2] == "bert.pooler" and top[3] == "classifier",
           ts.json_encode(top))
    assert(#model:top_layers(0) == 2 and model:top_layers(3)[1] == "bert.encoder.layer.0")
    local ok, message = pcall(model.top_layers, model, 4)
    assert(not ok and message:find("top 4 layers asked of a model with 3 layers", 1, true), message)
    assert(model:first_trainable_layer() == nil, "the embeddings train")
    model:set_trainable(model:top_layers(2))
    assert(model:first_trainable_layer() == 1)
    model:set_trainable(model:top_layers(0))
    assert(model:first_trainable_layer() == 3, "no layer trains: the whole trunk can be cached")
    -- ts.optimizer given the selection makes it the model's trainable set and optimises exactly that
    model:set_trainable({ "*" })
    local optimizer = ts.optimizer(model, { lr = 1e-3, trainable = model:top_layers(1) })
    assert(model:first_trainable_layer() == 2 and optimizer:parameter_count() == model:trainable_count(),
           optimizer:parameter_count() .. " " .. model:trainable_count())
  )");
}

TEST_CASE("fit's gradient accumulation: k batches of n make one update equal to a batch of k*n, a partial group counts") {
  lua(R"(
    local texts, labels = {}, {}
    for i = 1, 16 do
      texts[i] = i % 2 == 0 and ("a good film, take " .. i) or ("a dull film " .. string.rep("and long ", i % 5))
      labels[i] = i % 2
    end
    local data = ts.dataset { texts = texts, labels = labels }
    local tok = ts.tokenizer("data/vocab/bert-base-uncased")
    local config = { vocab_size = 30522, hidden_size = 16, num_hidden_layers = 1, num_attention_heads = 2,
                     intermediate_size = 32, hidden_dropout_prob = 0, attention_probs_dropout_prob = 0 }
    local function trained(batch_size, accumulate)
      ts.manual_seed(5)
      local model = ts.classifier_from_config(config, { num_labels = 2, head = "hf" })
      local history = ts.train.fit(model, ts.loader(data, tok, { batch_size = batch_size, sampler = "sequential" }),
        { name = "fit", epochs = 1, lr = 1e-2, loss = ts.loss { kind = "ce" }, accumulate = accumulate })
      local _, logits = ts.train.evaluate(model, ts.loader(data, tok, { sampler = "sequential" }))
      return history, logits
    end
    local whole, expected = trained(8, 1)
    local accumulated, logits = trained(4, 2)
    assert(whole.steps == 2 and accumulated.steps == 2, whole.steps .. " " .. accumulated.steps)
    local largest = (logits - expected):abs():max()
    assert(largest < 1e-5, "accumulated updates differ by " .. largest)
    -- 16 rows in batches of 3 are 6 batches: groups of 4 make one full update and one partial.
    local partial = trained(3, 4)
    assert(partial.steps == 2, partial.steps)
    local ok, message = pcall(trained, 4, 0)
    assert(not ok and message:find("accumulate 0", 1, true), message)
  )");
}
