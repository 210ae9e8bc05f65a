-- The experimental protocol every classification recipe shares (METHOD.md): read the data, make it imbalanced,
-- and for each seed load the model, run the recipe's stages, and evaluate on the test set; then write config.json,
-- metrics.json (per seed, mean and standard deviation) and predictions.csv into the run folder.
--
--   local settings = ts.settings(experiment.settings { epochs_stage1 = 1, loss = "ldam" })
--   experiment.run(settings, function(run)
--     run:stage { name = "stage 1", epochs = settings.epochs_stage1, lr = settings.lr_stage1,
--                 trainable = run:unfrozen(), loss = run:loss() }
--     run:stage { name = "stage 2", epochs = settings.epochs_stage2, lr = settings.lr_stage2,
--                 trainable = "all", loss = ts.loss { kind = "ce" } }
--   end)
local native = require "twostage.native"
local train = require "twostage.train"

local experiment = {}

-- model_settings(specs) -> specs with the settings experiment.load_model reads, `model` and `init`, for recipes that
-- load a model without the rest of the protocol.
function experiment.model_settings(specs)
  specs.model = { "data/models/all-minilm-l6-v2",
                  "Hugging Face model folder (config.json, model.safetensors, vocab.txt)" }
  specs.init = { "pretrained",
                 "\"pretrained\" weights from `model`, or \"random\": its architecture, freshly initialised" }
  return specs
end

-- The shared settings, with the reference protocol's defaults.
local function base_settings()
  return experiment.model_settings {
    train = { "data/sst2/train.tsv", "training data (CSV, TSV or JSONL)" },
    test = { "data/sst2/dev.tsv", "test data, evaluated once after the last stage" },
    text_column = { "sentence", "column holding the text" },
    pair_column = { "", "column holding a second text (empty: none)" },
    label_column = { "label", "column holding the label" },
    ratio = { 0.2, "imbalance rate minority/majority applied by down-sampling the minority classes (0: as is)" },
    minority = { { 0 }, "class ids that `ratio` down-samples", type = "integers" },
    imbalance = { 0, "long-tail imbalance factor n_max/n_min for multi-class data (0: off; replaces ratio)",
      type = "number" },
    train_rows = { 0, "a reduced protocol: a stratified subsample of this many training rows (seed data_seed), "
      .. "taken before the imbalance (0: every row, as the reference)" },
    data_seed = { 42, "seed of down-sampling, long tails and the validation split (the reference: 42)" },
    seeds = { { 7, 42, 106, 190, 191 }, "training seeds; metrics are reported per seed and as mean ± std" },
    epochs_stage1 = { 1, "epochs of stage 1 (0: skip its training, still evaluate)" },
    epochs_stage2 = { 1, "epochs of stage 2 (0: skip its training, still evaluate)" },
    lr_stage1 = { 1e-4, "peak learning rate of stage 1", type = "number" },
    lr_stage2 = { 1e-5, "peak learning rate of stage 2", type = "number" },
    batch_size = { 16, "rows per batch" },
    max_length = { 128, "tokens per row, [CLS] and [SEP] included (longer rows are truncated)" },
    padding = { "longest", "\"longest\": pad each batch to its longest row; \"fixed\": pad to max_length (reference)" },
    bucket = { false, "group rows of similar length into batches (faster; changes batch composition)" },
    unfreeze = { "1", "what stage 1 trains: the top k encoder layers + pooler + head (a number), or name patterns" },
    head = { "paper", "\"paper\": Linear(H,50)-ReLU-Linear(50,C) on the pooler; \"hf\": one Linear" },
    loss = { "ce", "stage-1 loss: ce, ldam, focal or logit_adjusted" },
    weights = { "none", "stage-1 class weights: none, effective (Cui et al.), inverse" },
    beta = { 0.9999, "β of the effective-number class weights" },
    max_margin = { 0.5, "largest LDAM margin" },
    scale = { 1.0, "LDAM logit scale s (the reference: 1; the LDAM paper: 30)", type = "number" },
    gamma = { 2.0, "focal loss γ", type = "number" },
    tau = { 1.0, "logit adjustment τ", type = "number" },
    clip = { 1.0, "gradient clipping by global norm (0: off)", type = "number" },
    warmup_ratio = { 0.0, "fraction of each stage's steps spent warming up the learning rate", type = "number" },
    optimizer = { "adamw_hf", "\"adamw_hf\": transformers.AdamW's arithmetic (the reference's); \"adamw\": "
      .. "torch.optim.AdamW's; \"sgd\"" },
    weight_decay = { 0.0, "AdamW weight decay", type = "number" },
    validation_fraction = { 0.0, "stratified share of train held out for validation (0: none, as the reference)",
      type = "number" },
    patience = { 0, "early stopping after this many validations without improvement (0: off; needs validation)" },
    keep_best = { false, "restore the weights of the best validation at the end of each stage" },
    monitor = { "macro_f1", "validation metric that early stopping and keep_best watch" },
    faithful_schedule = { false, "reproduce the reference's stage-1 schedule defect (augmentation variant)" },
    cache_frozen = { false, "run the frozen trunk once per row (eval mode) and train the top on cached states" },
    save_model = { false, "save the fine-tuned model of each seed into the run folder" },
    eval_batch_size = { 64, "rows per batch when evaluating" },
    device = { "cpu", "cpu or cuda" },
  }
end

-- settings(overrides) -> the table to pass to ts.settings: the shared settings, with `overrides` changing a
-- default (a plain value) or adding a setting of the recipe's own ({default, "help", type = ...}).
function experiment.settings(overrides)
  local specs = base_settings()
  for key, value in pairs(overrides or {}) do
    if type(value) == "table" and type(value[2]) == "string" then
      specs[key] = value
    elseif specs[key] then
      specs[key][1] = value
    else
      error("experiment.settings: '" .. key .. "' is not a shared setting; give it as {default, \"help\"}", 2)
    end
  end
  return specs
end

local function nonempty(text)
  if text == nil or text == "" then return nil end
  return text
end

local function read_options(settings, classes)
  return { text = settings.text_column, pair = nonempty(settings.pair_column), label = settings.label_column,
           classes = classes }
end

-- read(settings, path[, classes]) -> dataset read with the recipe's columns (and class list, when given)
function experiment.read(settings, path, classes)
  return native.read_table(path, read_options(settings, classes))
end

-- check_labels(dataset): a training file's labels decide the classes, so a stray one (a `7`, or a `positive`, in a
-- file of 0s and 1s) would add a class that the model then learns and is scored on. Its labels must be the class
-- ids 0..K-1, each with rows, or all class names; the first label that is neither is an error naming its file and
-- line, as a test file's label outside the training classes is.
function experiment.check_labels(data)
  local classes, counts = data:classes(), data:class_counts()
  local is_id, id_rows, name_rows = {}, 0, 0
  for c, name in ipairs(classes) do
    is_id[c] = name:match("^%d+$") ~= nil
    if is_id[c] then id_rows = id_rows + counts[c] else name_rows = name_rows + counts[c] end
  end
  local stray, why
  if id_rows > 0 and name_rows > 0 then
    local ids = id_rows > name_rows
    local usual = {}
    for c, name in ipairs(classes) do
      if is_id[c] == ids and #usual < 5 then usual[#usual + 1] = name end
    end
    stray = function(c) return is_id[c] ~= ids end
    why = ("is %s, unlike the file's other labels (%s)"):format(ids and "not a class id" or "a class id",
      table.concat(usual, ", "))
  elseif name_rows == 0 then
    for c = 1, #classes do
      if counts[c] == 0 then
        local last_empty = c
        while counts[last_empty + 1] == 0 do last_empty = last_empty + 1 end
        stray = function(k) return k > c end
        why = c == 1 and "leaves class id 0 without a row (are the labels counted from 1?)"
          or ("leaves class id%s %s without a row"):format(last_empty > c and "s" or "",
            last_empty > c and ("%d..%d"):format(c - 1, last_empty - 1) or tostring(c - 1))
        break
      end
    end
  end
  if not stray then return end
  local labels, lines = data:labels(), data:source_rows()
  for i, label in ipairs(labels) do
    if stray(label + 1) then
      error(("%s:%d: label \"%s\" %s; training labels are class ids 0..K-1, each with rows, or class names"):format(
        data:source(), lines[i], classes[label + 1], why), 0)
    end
  end
end

-- check_settings(settings): values the protocol would otherwise ignore (ratio -1 keeps every row), or reject only
-- after training (a max_length past the model's positions fails at the first long test row), are errors before
-- anything runs, naming the setting.
function experiment.check_settings(settings)
  local function bad(name, value, expected)
    error(("setting '%s': %s; expected %s"):format(name, value, expected), 0)
  end
  local ratio = settings.ratio
  if not (ratio == 0 or (ratio > 0 and ratio <= 1)) then
    bad("ratio", tostring(ratio), "a minority/majority rate in (0, 1], or 0 to keep train as it is")
  end
  if settings.imbalance ~= 0 and not (settings.imbalance >= 1) then
    bad("imbalance", tostring(settings.imbalance), "a factor n_max/n_min of at least 1, or 0 for none")
  end
  if settings.train_rows < 0 then bad("train_rows", tostring(settings.train_rows), "a row count, or 0 for all") end
  local fraction = settings.validation_fraction
  if not (fraction >= 0 and fraction < 1) then
    bad("validation_fraction", tostring(fraction), "a share in [0, 1), 0 for no validation split")
  end
  if #settings.seeds == 0 then bad("seeds", "no seeds given", "one training seed or more, e.g. --set seeds=7,42") end
  if settings.max_length < 2 then
    bad("max_length", tostring(settings.max_length), "at least 2 tokens ([CLS] and [SEP] count)")
  end
  -- A folder without a readable config.json is reported by the model's loading, with its own message.
  local ok, config = pcall(function()
    return native.json_decode(native.read_file(settings.model .. "/config.json"))
  end)
  local positions = ok and type(config) == "table" and tonumber(config.max_position_embeddings)
  if positions and settings.max_length > positions then
    bad("max_length", ("%d is more than the model's max_position_embeddings, %d (%s/config.json)"):format(
      settings.max_length, positions, settings.model), ("at most %d tokens per row"):format(positions))
  end
end

-- data(settings) -> {train, validation, test, classes, counts}: the imbalanced training set as the reference makes
-- it, an optional stratified validation split, and the test set with the training set's classes. The settings are
-- checked first: every recipe of the protocol reads its data before it trains.
function experiment.data(settings)
  experiment.check_settings(settings)
  local full = experiment.read(settings, settings.train)
  experiment.check_labels(full)
  local classes = full:classes()
  local protocol = "full"
  if settings.train_rows > 0 and settings.train_rows < #full then
    local all_rows = #full
    local _
    _, full = native.split(full, { fraction = settings.train_rows / all_rows, seed = settings.data_seed })
    protocol = string.format("reduced: a stratified subsample of %d of the %d training rows (seed %d), then the "
      .. "reference's protocol", #full, all_rows, settings.data_seed)
    native.log("protocol", protocol, { train_rows = #full, all_train_rows = all_rows })
  end
  local test = experiment.read(settings, settings.test, classes)
  local train_set = full
  if settings.imbalance > 0 then
    train_set = native.long_tail(full, { imbalance = settings.imbalance, seed = settings.data_seed })
  elseif settings.ratio > 0 then
    train_set = native.downsample(full, { rate = settings.ratio, minority = settings.minority,
      seed = settings.data_seed })
  end
  local validation
  if settings.validation_fraction > 0 then
    train_set, validation = native.split(train_set, { fraction = settings.validation_fraction,
      seed = settings.data_seed })
  end
  native.log("data", string.format("train %s; test %d rows%s", tostring(train_set), #test,
    validation and string.format("; validation %d rows", #validation) or ""),
    { train_class_counts = train_set:class_counts(), test_rows = #test,
      validation_rows = validation and #validation or 0 })
  return { train = train_set, validation = validation, test = test, classes = classes,
           counts = train_set:class_counts(), protocol = protocol }
end

-- The smallest class of the training set (lowest id on ties): the "minority" of f1_minority.
local function minority_class(counts)
  local smallest = 1
  for c = 2, #counts do if counts[c] < counts[smallest] then smallest = c end end
  return smallest - 1
end

---------------------------------------------------------------------------------------------------------------------
-- One seed's run: the model, its loaders and its stages.

local Run = {}
Run.__index = Run

-- The classifier of `settings.model` (init "pretrained") or its architecture freshly initialised (init "random").
-- A checkpoint fine-tuned on another label set keeps its encoder; its head is re-initialised (and reported).
function experiment.load_model(settings, num_classes)
  local options = { head = settings.head, num_labels = num_classes, device = settings.device,
                    ignore_mismatched_sizes = true }
  if settings.init == "random" then
    local config = native.json_decode(native.read_file(settings.model .. "/config.json"))
    return native.classifier_from_config(config, options)
  elseif settings.init ~= "pretrained" then
    error("init '" .. settings.init .. "': expected \"pretrained\" or \"random\"")
  end
  local model, report = native.load_classifier(settings.model, options)
  if #report.missing > 0 or #report.mismatched > 0 then
    native.log("model", string.format("newly initialised: %d missing and %d mismatched tensors", #report.missing,
      #report.mismatched), { missing = report.missing, mismatched = report.mismatched })
  end
  return model
end

function Run.new(settings, data, seed, tokenizer)
  native.manual_seed(seed)
  local run = setmetatable({
    settings = settings, data = data, seed = seed, tokenizer = tokenizer,
    train = data.train, counts = data.counts, classes = data.classes,
    stages = {}, adjust = nil,
  }, Run)
  run.model = experiment.load_model(settings, #data.classes)
  run.test_loader = run:eval_loader(data.test)
  if data.validation then run.validation_loader = run:eval_loader(data.validation) end
  return run
end

-- A training loader over `dataset`: shuffled (or `sampler`), seeded by the run's seed and the stage.
function Run:loader(dataset, options)
  options = options or {}
  local s = self.settings
  return native.loader(dataset, self.tokenizer, {
    batch_size = s.batch_size, max_length = s.max_length, padding = s.padding, bucket = s.bucket,
    sampler = options.sampler or "random", seed = native.seed_streams.stage_loader(self.seed, #self.stages + 1),
    num_samples = options.num_samples,
  })
end

-- An evaluation loader: every row once; bucketed by length, since evaluate() restores the row order.
function Run:eval_loader(dataset)
  local s = self.settings
  return native.loader(dataset, self.tokenizer, { batch_size = s.eval_batch_size, max_length = s.max_length,
    padding = s.padding, bucket = s.padding == "longest", sampler = "sequential" })
end

-- The parameter patterns of the `unfreeze` setting (or of `spec`).
function Run:unfrozen(spec)
  return train.unfreeze_patterns(self.model, spec or self.settings.unfreeze)
end

-- The stage-1 loss the settings describe (loss, weights, beta, max_margin, scale, gamma, tau).
function Run:loss(kind)
  local s = self.settings
  return native.loss { kind = kind or s.loss, counts = self.counts, weights = s.weights, beta = s.beta,
    max_margin = s.max_margin, scale = s.scale, gamma = s.gamma, tau = s.tau }
end

-- Optimiser steps an epoch of `dataset` takes at the run's batch size.
function Run:steps_per_epoch(dataset)
  return math.ceil(#dataset / self.settings.batch_size)
end

-- stage{name, epochs, lr, loss, trainable, data = train, sampler = "random", total_steps} -> history
-- Trains (fit), then evaluates on the validation split, or on the test set when there is none.
function Run:stage(spec)
  local s = self.settings
  local dataset = spec.data or self.train
  local loader = self:loader(dataset, { sampler = spec.sampler })
  local history = train.fit(self.model, loader, {
    name = spec.name, epochs = spec.epochs, lr = spec.lr, loss = spec.loss, trainable = spec.trainable,
    total_steps = spec.total_steps, clip = s.clip > 0 and s.clip or false, warmup_ratio = s.warmup_ratio,
    optimizer = { kind = s.optimizer, weight_decay = s.weight_decay }, cache_frozen = s.cache_frozen and spec.cache_frozen ~= false,
    validation = self.validation_loader, patience = s.patience > 0 and s.patience or nil, keep_best = s.keep_best,
    monitor = { metric = s.monitor, mode = s.monitor == "log_loss" and "min" or "max" },
  })
  local evaluated_on = self.validation_loader and "validation" or "test"
  local metrics = train.evaluate(self.model, self.validation_loader or self.test_loader, { adjust = self.adjust })
  native.log("stage", string.format("%s (seed %d) on %s: accuracy %.4f, macro-F1 %.4f", spec.name, self.seed,
    evaluated_on, metrics.accuracy, metrics.macro_f1), { stage = spec.name, seed = self.seed, metrics = metrics })
  self.stages[#self.stages + 1] = {
    name = spec.name, epochs = history.epochs, steps = history.steps, seconds = history.seconds,
    ms_per_batch = history.ms_per_batch, evaluated_on = evaluated_on, accuracy = metrics.accuracy, macro_f1 = metrics.macro_f1,
    f1_per_class = metrics.f1_per_class, best = history.best,
  }
  return history
end

---------------------------------------------------------------------------------------------------------------------
-- Results

local SCALARS = { "accuracy", "macro_f1", "weighted_f1", "balanced_accuracy", "macro_precision", "macro_recall",
                  "log_loss", "f1_minority", "validation_accuracy", "validation_macro_f1", "validation_f1_minority" }
local ARRAYS = { "f1_per_class", "precision_per_class", "recall_per_class" }

local function prediction_lines(seed, test, logits)
  local lines = {}
  local rows = logits:totable()
  local labels = test:labels()
  for i, row in ipairs(rows) do
    local best = 1
    for c = 2, #row do if row[c] > row[best] then best = c end end
    local fields = { seed, i - 1, labels[i], best - 1 }
    for c = 1, #row do fields[#fields + 1] = string.format("%.9g", row[c]) end
    lines[#lines + 1] = table.concat(fields, ",")
  end
  return lines
end

local function summarise(per_seed_list, classes, counts)
  local runs = {}
  for _, record in ipairs(per_seed_list) do
    local run = {}
    for _, key in ipairs(SCALARS) do run[key] = record[key] end
    for _, key in ipairs(ARRAYS) do run[key] = record[key] end
    runs[#runs + 1] = run
  end
  local aggregate = native.mean_std(runs)
  local summary = { classes = classes, minority_class = minority_class(counts), train_class_counts = counts,
                    n = aggregate.n, mean = aggregate.mean, std = aggregate.n > 1 and aggregate.std or native.null }
  for key, value in pairs(aggregate.mean) do summary[key] = value end
  local confusion
  for _, record in ipairs(per_seed_list) do
    if not confusion then
      confusion = {}
      for r, row in ipairs(record.confusion_matrix) do
        confusion[r] = {}
        for c, value in ipairs(row) do confusion[r][c] = value end
      end
    else
      for r, row in ipairs(record.confusion_matrix) do
        for c, value in ipairs(row) do confusion[r][c] = confusion[r][c] + value end
      end
    end
  end
  summary.confusion_matrix = confusion
  return summary
end

-- run(settings, body): body(run) runs the stages of one seed; see the top of this file.
function experiment.run(settings, body)
  local run_dir = native.run_dir()
  local all_settings = {}
  for key, value in pairs(settings) do all_settings[key] = value end
  native.write_file(run_dir .. "/config.json",
    native.json_encode({ settings = all_settings, run = native.run_info() }, 2))

  local data = experiment.data(settings)
  local tokenizer = native.tokenizer(settings.model)
  local minority = minority_class(data.counts)
  local per_seed, per_seed_list = {}, {}
  local header = { "seed", "index", "label", "prediction" }
  for c = 1, #data.classes do header[#header + 1] = "logit_" .. (c - 1) end
  local prediction_rows = { table.concat(header, ",") }

  for _, seed in ipairs(settings.seeds) do
    local started = native.clock()
    local run = Run.new(settings, data, seed, tokenizer)
    body(run)
    local metrics, logits = train.evaluate(run.model, run.test_loader, { adjust = run.adjust })
    metrics.f1_minority = metrics.f1_per_class[minority + 1]
    if run.validation_loader then
      -- The final model on the validation split: what a choice of settings may look at (never the test set).
      local held_out = train.evaluate(run.model, run.validation_loader, { adjust = run.adjust })
      metrics.validation_accuracy = held_out.accuracy
      metrics.validation_macro_f1 = held_out.macro_f1
      metrics.validation_f1_minority = held_out.f1_per_class[minority + 1]
    end
    metrics.train_class_counts = data.counts
    metrics.seed = seed
    metrics.stages = run.stages
    metrics.seconds = native.clock() - started
    per_seed[tostring(seed)] = metrics
    per_seed_list[#per_seed_list + 1] = metrics
    for _, line in ipairs(prediction_lines(seed, data.test, logits)) do prediction_rows[#prediction_rows + 1] = line end
    native.log("result", string.format("seed %d: accuracy %.4f, macro-F1 %.4f, minority F1 %.4f (%.0f s)", seed,
      metrics.accuracy, metrics.macro_f1, metrics.f1_minority, metrics.seconds),
      { seed = seed, accuracy = metrics.accuracy, macro_f1 = metrics.macro_f1, f1_minority = metrics.f1_minority })
    if settings.save_model then run.model:save(string.format("%s/model-seed%d", run_dir, seed)) end
    run.model = nil
    collectgarbage()
  end

  local summary = summarise(per_seed_list, data.classes, data.counts)
  summary.seeds = settings.seeds
  summary.protocol = data.protocol
  summary.per_seed = per_seed
  native.write_file(run_dir .. "/metrics.json", native.json_encode(summary, 2))
  native.write_file(run_dir .. "/predictions.csv", table.concat(prediction_rows, "\n") .. "\n")
  local std = summary.std
  local function pm(key)
    if type(std) == "table" and std[key] then return string.format("%.4f ± %.4f", summary[key], std[key]) end
    return string.format("%.4f", summary[key])
  end
  native.log("result", string.format("%d seed(s): accuracy %s, macro-F1 %s, minority F1 %s", #settings.seeds,
    pm("accuracy"), pm("macro_f1"), pm("f1_minority")), { metrics = run_dir .. "/metrics.json" })
  return summary
end

experiment.Run = Run
return experiment
