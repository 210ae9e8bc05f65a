-- Masked-LM pretraining of BertForMaskedLM (recipes/pretrain_mlm.lua): the corpus, the model (resumed, continued or
-- new), the held-out evaluation and the training loop with its checkpoints. Every draw (block order, masks,
-- dropout, the generator's replacements) is a function of (seed, step), so a run resumed from a checkpoint goes on
-- exactly as an uninterrupted one.
local ts = require "twostage"

local pretrain = {}

-- The corpus entries PATH:COLUMN packed into blocks of max_length tokens, and the held-out share split off.
function pretrain.corpus(tokenizer, entries, options)
  local datasets = {}
  for _, entry in ipairs(entries) do
    local path, column = entry:match("^(.*):([^:/]+)$")
    if not path then error("corpus entry '" .. entry .. "': expected PATH:COLUMN") end
    datasets[#datasets + 1] = ts.read_table(path, { text = column, label = false, empty_text = "drop" })
  end
  local corpus = ts.mlm_corpus(tokenizer, datasets, { max_length = options.max_length, threads = 2 })
  local heldout = corpus:split(options.heldout_fraction, options.heldout_seed)
  ts.log("corpus", string.format("%d blocks, %d tokens for training; %d blocks held out", #corpus, corpus:tokens(),
    #heldout), { blocks = #corpus, tokens = corpus:tokens(), heldout_blocks = #heldout })
  return corpus, heldout
end

-- The model: resumed from `checkpoint` (with its state: step, losses, evaluations), continued from settings.from,
-- or new from the settings (from skip-gram vectors of the corpus with word_vectors). Returns model, state.
function pretrain.model(settings, tokenizer, corpus, checkpoint)
  if settings.word_vectors and settings.from ~= "" then
    error("word_vectors initialises a model from scratch; it does not combine with `from`")
  end
  local state = { step = 0, losses = {}, evaluations = {} }
  local model
  if ts.exists(checkpoint .. "/state.json") then
    state = ts.json_decode(ts.read_file(checkpoint .. "/state.json"))
    model = ts.masked_lm(checkpoint, { device = settings.device })
    ts.log("resume", string.format("resuming at step %d from %s", state.step, checkpoint), { step = state.step })
  elseif settings.from ~= "" then
    model = ts.masked_lm(settings.from, { device = settings.device })
  else
    ts.manual_seed(settings.seed)
    model = ts.masked_lm({
      vocab_size = tokenizer:vocab_size(), hidden_size = settings.hidden, num_hidden_layers = settings.layers,
      num_attention_heads = settings.heads, intermediate_size = settings.intermediate,
      max_position_embeddings = 512, type_vocab_size = 2, hidden_act = "gelu", hidden_dropout_prob = 0.1,
      attention_probs_dropout_prob = 0.1, layer_norm_eps = 1e-12, initializer_range = 0.02, pad_token_id = 0,
    }, { device = settings.device })
    if settings.word_vectors then
      local vectors = corpus:word_vectors(tokenizer, { dimension = settings.hidden,
        epochs = settings.word_vector_epochs, min_count = settings.word_vector_min_count, seed = settings.seed })
      local rows = model:set_word_embeddings(vectors)
      ts.log("word_vectors", string.format("word embeddings of %d tokens from skip-gram vectors", rows),
        { rows = rows })
    end
  end
  if #settings.freeze > 0 then model:freeze(settings.freeze) end
  ts.log("model", string.format("%d parameters, %d of them trained", model:num_parameters(), model:trainable_count()),
    { config = model:config(), frozen = settings.freeze })
  return model, state
end

-- The generator's draws are a function of (seed, step) like the masks (ts.seed_streams, host/data/seed_streams.h);
-- held-out draws are of the held-out seed and the group's first block.
local streams = ts.seed_streams

-- Held-out masks are drawn per group of blocks: a fixed group size, not batch_size, keeps them (and so the figures)
-- the same in every run with the same heldout_seed.
local heldout_group = 32

-- The held-out masked-LM loss and accuracy (and the [CLS] bag-of-words and replaced-token detection figures when
-- trained), logged and appended to state.evaluations.
local function evaluate(job)
  local settings, model, generator, detector = job.settings, job.model, job.generator, job.detector
  model:eval()
  local loss_sum, correct, count, bag_of_words_sum = 0, 0, 0, 0
  local detection_sum, detected, tokens, replaced = 0, 0, 0, 0
  ts.no_grad(function()
    for first = 0, #job.heldout - 1, heldout_group do
      local batch = job.masker:range(job.heldout, first, heldout_group, settings.heldout_seed)
      local _, batch_correct, batch_count, masked_lm, bag_of_words = model:loss(batch, job.objective)
      loss_sum = loss_sum + masked_lm * batch_count
      correct, count = correct + batch_correct, count + batch_count
      bag_of_words_sum = bag_of_words_sum + (bag_of_words or 0) * batch.size
      if generator then
        local _, figures = model:replaced_token_loss(batch, generator, detector,
          { weight = settings.detection_weight, seed = streams.pretraining_replacements(settings.heldout_seed, first),
            temperature = settings.generator_temperature })
        detection_sum = detection_sum + figures.detection * figures.tokens
        detected, tokens = detected + figures.detected, tokens + figures.tokens
        replaced = replaced + figures.replaced
      end
    end
  end)
  model:train()
  local state = job.state
  local result = { step = state.step, loss = loss_sum / math.max(1, count), accuracy = correct / math.max(1, count),
                   masked = count }
  local line = string.format("step %d: held-out masked-LM loss %.4f, accuracy %.4f (%d masked tokens)",
    result.step, result.loss, result.accuracy, count)
  if settings.cls_bag_of_words > 0 then
    result.bag_of_words = bag_of_words_sum / math.max(1, #job.heldout)
    line = line .. string.format("; [CLS] bag-of-words loss %.4f", result.bag_of_words)
  end
  if generator then
    result.detection, result.detection_accuracy = detection_sum / math.max(1, tokens), detected / math.max(1, tokens)
    result.replaced_share = replaced / math.max(1, tokens)
    line = line .. string.format("; replaced-token detection loss %.4f, accuracy %.4f (%.1f%% of tokens replaced)",
      result.detection, result.detection_accuracy, 100 * result.replaced_share)
  end
  state.evaluations[#state.evaluations + 1] = result
  ts.log("heldout", line, result)
  return result
end

local function save_checkpoint(job)
  local checkpoint = job.checkpoint
  job.model:save(checkpoint, { tokenizer = job.tokenizer })
  job.optimizer:save(checkpoint .. "/optimizer.pt")
  if job.detector then job.detector:save(checkpoint .. "/detection_head.safetensors") end
  -- state.json last: a checkpoint without it (a crash mid-save) is never resumed from a mix of steps.
  ts.write_file(checkpoint .. "/state.json", ts.json_encode(job.state))
end

-- One optimiser step on the step's batch; returns the loss and its parts for the log.
local function train_step(job)
  local settings, model, state = job.settings, job.model, job.state
  local batch = job.masker:batch(job.corpus, state.step, settings.batch_size, settings.seed)
  ts.manual_seed(streams.pretraining_dropout(settings.seed, state.step))
  local loss, masked_lm, bag_of_words, detection, _
  if job.generator then
    local figures
    loss, figures = model:replaced_token_loss(batch, job.generator, job.detector,
      { weight = settings.detection_weight, seed = streams.pretraining_replacements(settings.seed, state.step),
        temperature = settings.generator_temperature })
    masked_lm, detection = figures.masked_lm, figures.detection
  else
    loss, _, _, masked_lm, bag_of_words = model:loss(batch, job.objective)
  end
  loss:backward()
  job.optimizer:step { clip = settings.clip }
  job.schedule:step()
  job.optimizer:zero_grad()
  state.step = state.step + 1
  return loss:item(), batch.size, masked_lm, bag_of_words, detection
end

local function log_step(job, value, masked_lm, bag_of_words, detection)
  local lr = job.optimizer:lr()
  local line = string.format("step %d: loss %.4f, lr %.3g", job.state.step, value, lr)
  if bag_of_words then
    line = line .. string.format(" (masked-LM %.4f, bag-of-words %.4f)", masked_lm, bag_of_words)
  end
  if detection then
    line = line .. string.format(" (masked-LM %.4f, replaced-token detection %.4f)", masked_lm, detection)
  end
  ts.log("train", line, { step = job.state.step, loss = value, masked_lm = masked_lm, bag_of_words = bag_of_words,
    detection = detection, lr = lr })
end

-- run{settings = the recipe's settings, model, state, tokenizer, corpus, heldout, masker, checkpoint = DIR,
--     run_dir = DIR}: trains settings.steps steps from state.step (resumed from the checkpoint's optimiser and
-- detection head when state.step > 0), evaluating every eval_every and checkpointing every save_every steps, then
-- saves the model to run_dir/model and writes run_dir/metrics.json. steps = 0 only evaluates (and saves a new
-- model untrained); stop_after stops as an interruption would.
function pretrain.run(job)
  local settings, model, state = job.settings, job.model, job.state
  job.objective = { bag_of_words = settings.cls_bag_of_words }
  -- ELECTRA: a frozen generator fills the selected positions, and a detection head (kept in the checkpoint, not in
  -- the saved model) tells replaced tokens from original ones.
  if settings.generator ~= "" then
    if settings.cls_bag_of_words > 0 then error("cls_bag_of_words and generator do not combine") end
    job.generator = ts.masked_lm(settings.generator, { device = settings.device })
    ts.manual_seed(settings.seed)
    job.detector = model:detection_head()
    if state.step > 0 then job.detector:load(job.checkpoint .. "/detection_head.safetensors") end
  end

  if settings.steps == 0 then  -- only the held-out masked-LM loss and accuracy of the model
    local result = evaluate(job)
    ts.write_file(job.run_dir .. "/metrics.json", ts.json_encode({ steps = 0, heldout_loss = result.loss,
      heldout_accuracy = result.accuracy, heldout_blocks = #job.heldout }, 2))
    -- A new model is saved untrained (with its skip-gram embeddings, if asked for), to fine-tune or compare.
    if settings.from == "" then
      model:save(job.run_dir .. "/model", { fp16 = settings.fp16, tokenizer = job.tokenizer })
    end
    return
  end

  job.optimizer = ts.optimizer(job.detector and { model, job.detector } or model, { kind = "adamw", lr = settings.lr,
    weight_decay = settings.weight_decay, no_decay = { "bias", "LayerNorm.weight" } })
  if state.step > 0 then job.optimizer:load(job.checkpoint .. "/optimizer.pt") end
  job.schedule = ts.schedule(job.optimizer, { kind = "linear", total_steps = settings.steps,
    warmup_steps = math.floor(settings.warmup_ratio * settings.steps), start_step = state.step })

  local progress = ts.progress.new("pretrain", settings.steps - state.step)
  local started = ts.clock()
  model:train()
  while state.step < settings.steps do
    local value, examples, masked_lm, bag_of_words, detection = train_step(job)
    state.losses[#state.losses + 1] = value
    progress:update { examples = examples, loss = value, lr = job.optimizer:lr() }
    if state.step % settings.log_every == 0 then log_step(job, value, masked_lm, bag_of_words, detection) end
    if state.step % settings.eval_every == 0 then evaluate(job) end
    if state.step % settings.save_every == 0 then save_checkpoint(job) end
    collectgarbage()  -- tensors are large, their userdata small: collect each step rather than when Lua notices
    if settings.stop_after > 0 and state.step >= settings.stop_after then
      ts.log("stop", string.format("stopped after step %d (stop_after)", state.step), { step = state.step })
      return
    end
  end
  progress:finish()

  local final = evaluate(job)
  save_checkpoint(job)
  model:save(job.run_dir .. "/model", { fp16 = settings.fp16, tokenizer = job.tokenizer })
  local tokens_per_step = settings.batch_size * settings.max_length
  ts.write_file(job.run_dir .. "/metrics.json", ts.json_encode({
    steps = state.step, heldout_loss = final.loss, heldout_accuracy = final.accuracy,
    heldout_bag_of_words = final.bag_of_words, heldout_detection = final.detection,
    heldout_detection_accuracy = final.detection_accuracy,
    training_blocks = #job.corpus, training_tokens = job.corpus:tokens(), heldout_blocks = #job.heldout,
    tokens_seen_at_most = state.step * tokens_per_step, seconds_this_run = ts.clock() - started,
    evaluations = state.evaluations, losses = state.losses,
  }, 2))
end

return pretrain
