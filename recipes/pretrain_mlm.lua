-- Masked-LM pretraining of BertForMaskedLM, from scratch (a small BERT over a given vocabulary) or continued from a
-- checkpoint (domain-adaptive pretraining, `from`). Texts are packed into blocks of max_length tokens; 15% of the
-- tokens (or whole words) are selected afresh every step, 80% of those become [MASK], 10% a random token, 10% stay.
-- AdamW with warm-up and linear decay. A checkpoint every save_every steps; run again with the same --out to resume
-- an interrupted run exactly where it stopped (batches, masks and dropout are functions of seed and step).
-- With `word_vectors`, a model from scratch starts from skip-gram vectors of the corpus in its word embeddings.
-- With `generator`, ELECTRA's replaced-token detection instead: a frozen masked-LM model fills the selected positions
-- with sampled tokens, and the model tells replaced from original at every token (see README).
local ts = require "twostage"

local settings = ts.settings {
  from = { "", "checkpoint folder to continue pretraining (empty: from scratch)" },
  vocab = { "data/vocab/bert-base-uncased", "vocabulary folder when training from scratch" },
  layers = { 4, "encoder layers (from scratch)" },
  hidden = { 256, "hidden size (from scratch)" },
  heads = { 4, "attention heads (from scratch)" },
  intermediate = { 1024, "feed-forward size (from scratch)" },
  word_vectors = { false, "from scratch: initialise the word embeddings with skip-gram vectors of the training blocks" },
  word_vector_epochs = { 5, "passes of skip-gram over the training blocks" },
  word_vector_min_count = { 5, "tokens seen fewer times keep random embeddings" },
  freeze = { {}, "parameter patterns kept as they are (e.g. bert.embeddings.word_embeddings: skip-gram vectors "
                 .. "stay, and so does the decoder tied to them)", type = "strings" },
  corpus = { { "data/sst2/train.tsv:sentence" }, "text files as PATH:COLUMN (CSV, TSV or JSONL)" },
  max_length = { 128, "tokens per block" },
  batch_size = { 64, "blocks per step" },
  steps = { 1000, "optimiser steps (0: only evaluate the model on the held-out blocks; a new one is saved as well)" },
  lr = { 5e-4, "peak learning rate", type = "number" },
  warmup_ratio = { 0.06, "share of the steps spent warming up", type = "number" },
  weight_decay = { 0.01, "AdamW weight decay (not on biases and LayerNorm weights)", type = "number" },
  clip = { 1.0, "gradient clipping by global norm", type = "number" },
  mask_probability = { 0.15, "share of tokens (or words) selected for prediction", type = "number" },
  whole_word = { false, "select whole words (a token and its ## pieces) together" },
  cls_bag_of_words = { 0, "weight of a sentence-level task for [CLS]: predict every word of its block through the "
                          .. "masked-LM head (0: masked-LM only)", type = "number" },
  generator = { "", "a masked-LM model folder: train by replaced-token detection (ELECTRA) with it as the frozen "
                   .. "generator, plus masked-LM at the replaced positions (empty: masked-LM only)" },
  detection_weight = { 50, "weight of the replaced-token detection loss (ELECTRA's lambda)", type = "number" },
  generator_temperature = { 1.0, "divides the generator's logits: above 1, easier replacements", type = "number" },
  heldout_fraction = { 0.01, "share of blocks held out for the masked-LM loss and accuracy", type = "number" },
  eval_every = { 250, "steps between held-out evaluations" },
  save_every = { 250, "steps between checkpoints" },
  log_every = { 50, "steps between log lines of the training loss" },
  fp16 = { true, "save the final model's weights in float16" },
  stop_after = { 0, "stop after this step as an interruption would, without the final save (tests)" },
  seed = { 42, "seed of initialisation, block order, masks and dropout" },
  heldout_seed = { 42, "seed of the held-out split and its masks; keep it when continuing with another seed, "
                        .. "so that no held-out block is trained on and held-out figures stay comparable" },
  device = { "cpu", "cpu or cuda" },
}

local run_dir = ts.run_dir()
local checkpoint = run_dir .. "/checkpoint"

local tokenizer = ts.tokenizer(settings.from ~= "" and settings.from or settings.vocab)
local datasets = {}
for _, entry in ipairs(settings.corpus) do
  local path, column = entry:match("^(.*):([^:/]+)$")
  if not path then error("corpus entry '" .. entry .. "': expected PATH:COLUMN") end
  datasets[#datasets + 1] = ts.read_table(path, { text = column, label = false, empty_text = "drop" })
end
local corpus = ts.mlm_corpus(tokenizer, datasets, { max_length = settings.max_length, threads = 2 })
local heldout = corpus:split(settings.heldout_fraction, settings.heldout_seed)
ts.log("corpus", string.format("%d blocks, %d tokens for training; %d blocks held out", #corpus, corpus:tokens(),
  #heldout), { blocks = #corpus, tokens = corpus:tokens(), heldout_blocks = #heldout })
local masker = ts.masker(tokenizer, { probability = settings.mask_probability, whole_word = settings.whole_word })

if settings.word_vectors and settings.from ~= "" then
  error("word_vectors initialises a model from scratch; it does not combine with `from`")
end

-- The model: resumed, continued, or new.
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
    local vectors = corpus:word_vectors(tokenizer, { dimension = settings.hidden, epochs = settings.word_vector_epochs,
      min_count = settings.word_vector_min_count, seed = settings.seed })
    local rows = model:set_word_embeddings(vectors)
    ts.log("word_vectors", string.format("word embeddings of %d tokens from skip-gram vectors", rows), { rows = rows })
  end
end
if #settings.freeze > 0 then model:freeze(settings.freeze) end
ts.log("model", string.format("%d parameters, %d of them trained", model:num_parameters(), model:trainable_count()),
  { config = model:config(), frozen = settings.freeze })
-- ELECTRA: a frozen generator fills the selected positions, and a detection head (kept in the checkpoint, not in the
-- saved model) tells replaced tokens from original ones.
local generator, detector
if settings.generator ~= "" then
  if settings.cls_bag_of_words > 0 then error("cls_bag_of_words and generator do not combine") end
  generator = ts.masked_lm(settings.generator, { device = settings.device })
  ts.manual_seed(settings.seed)
  detector = model:detection_head()
  if state.step > 0 then detector:load(checkpoint .. "/detection_head.safetensors") end
end

-- The generator's draws, as a function of (seed, step) like the masks; held-out draws of the held-out seed.
local function draw_seed(seed, step) return seed * 1000003 + step + 0x5eed end

-- Held-out masks are drawn per group of blocks: a fixed group size, not batch_size, keeps them (and so the figures)
-- the same in every run with the same heldout_seed.
local heldout_group = 32

local objective = { bag_of_words = settings.cls_bag_of_words }

local function evaluate()
  model:eval()
  local loss_sum, correct, count, bag_of_words_sum = 0, 0, 0, 0
  local detection_sum, detected, tokens, replaced = 0, 0, 0, 0
  ts.no_grad(function()
    for first = 0, #heldout - 1, heldout_group do
      local batch = masker:range(heldout, first, heldout_group, settings.heldout_seed)
      local _, batch_correct, batch_count, masked_lm, bag_of_words = model:loss(batch, objective)
      loss_sum = loss_sum + masked_lm * batch_count
      correct, count = correct + batch_correct, count + batch_count
      bag_of_words_sum = bag_of_words_sum + (bag_of_words or 0) * batch.size
      if generator then
        local _, figures = model:replaced_token_loss(batch, generator, detector,
          { weight = settings.detection_weight, seed = draw_seed(settings.heldout_seed, first),
            temperature = settings.generator_temperature })
        detection_sum = detection_sum + figures.detection * figures.tokens
        detected, tokens = detected + figures.detected, tokens + figures.tokens
        replaced = replaced + figures.replaced
      end
    end
  end)
  model:train()
  local result = { step = state.step, loss = loss_sum / math.max(1, count), accuracy = correct / math.max(1, count),
                   masked = count }
  local line = string.format("step %d: held-out masked-LM loss %.4f, accuracy %.4f (%d masked tokens)",
    result.step, result.loss, result.accuracy, count)
  if settings.cls_bag_of_words > 0 then
    result.bag_of_words = bag_of_words_sum / math.max(1, #heldout)
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

if settings.steps == 0 then  -- only the held-out masked-LM loss and accuracy of the model
  local result = evaluate()
  ts.write_file(run_dir .. "/metrics.json", ts.json_encode({ steps = 0, heldout_loss = result.loss,
    heldout_accuracy = result.accuracy, heldout_blocks = #heldout }, 2))
  -- A new model is saved untrained (with its skip-gram embeddings, if asked for), to fine-tune or compare.
  if settings.from == "" then model:save(run_dir .. "/model", { fp16 = settings.fp16, tokenizer = tokenizer }) end
  return
end

local optimizer = ts.optimizer(detector and { model, detector } or model, { kind = "adamw", lr = settings.lr,
  weight_decay = settings.weight_decay, no_decay = { "bias", "LayerNorm.weight" } })
if state.step > 0 then optimizer:load(checkpoint .. "/optimizer.pt") end
local schedule = ts.schedule(optimizer, { kind = "linear", total_steps = settings.steps,
  warmup_steps = math.floor(settings.warmup_ratio * settings.steps), start_step = state.step })

local function save_checkpoint()
  model:save(checkpoint, { tokenizer = tokenizer })
  optimizer:save(checkpoint .. "/optimizer.pt")
  if detector then detector:save(checkpoint .. "/detection_head.safetensors") end
  -- state.json last: a checkpoint without it (a crash mid-save) is never resumed from a mix of steps.
  ts.write_file(checkpoint .. "/state.json", ts.json_encode(state))
end

local progress = ts.progress.new("pretrain", settings.steps - state.step)
local started = ts.clock()
model:train()
while state.step < settings.steps do
  local batch = masker:batch(corpus, state.step, settings.batch_size, settings.seed)
  ts.manual_seed(settings.seed * 1000003 + state.step)  -- dropout, as a function of the step
  local loss, masked_lm, bag_of_words, detection, _
  if generator then
    local figures
    loss, figures = model:replaced_token_loss(batch, generator, detector,
      { weight = settings.detection_weight, seed = draw_seed(settings.seed, state.step),
        temperature = settings.generator_temperature })
    masked_lm, detection = figures.masked_lm, figures.detection
  else
    loss, _, _, masked_lm, bag_of_words = model:loss(batch, objective)
  end
  loss:backward()
  optimizer:step { clip = settings.clip }
  schedule:step()
  optimizer:zero_grad()
  state.step = state.step + 1
  local value = loss:item()
  state.losses[#state.losses + 1] = value
  progress:update { examples = batch.size, loss = value, lr = optimizer:lr() }
  if state.step % settings.log_every == 0 then
    local line = string.format("step %d: loss %.4f, lr %.3g", state.step, value, optimizer:lr())
    if bag_of_words then
      line = line .. string.format(" (masked-LM %.4f, bag-of-words %.4f)", masked_lm, bag_of_words)
    end
    if detection then
      line = line .. string.format(" (masked-LM %.4f, replaced-token detection %.4f)", masked_lm, detection)
    end
    ts.log("train", line, { step = state.step, loss = value, masked_lm = masked_lm, bag_of_words = bag_of_words,
      detection = detection, lr = optimizer:lr() })
  end
  if state.step % settings.eval_every == 0 then evaluate() end
  if state.step % settings.save_every == 0 then save_checkpoint() end
  collectgarbage()  -- tensors are large, their userdata small: collect each step rather than when Lua notices
  if settings.stop_after > 0 and state.step >= settings.stop_after then
    ts.log("stop", string.format("stopped after step %d (stop_after)", state.step), { step = state.step })
    return
  end
end
progress:finish()

local final = evaluate()
save_checkpoint()
model:save(run_dir .. "/model", { fp16 = settings.fp16, tokenizer = tokenizer })
local tokens_per_step = settings.batch_size * settings.max_length
ts.write_file(run_dir .. "/metrics.json", ts.json_encode({
  steps = state.step, heldout_loss = final.loss, heldout_accuracy = final.accuracy,
  heldout_bag_of_words = final.bag_of_words, heldout_detection = final.detection,
  heldout_detection_accuracy = final.detection_accuracy,
  training_blocks = #corpus, training_tokens = corpus:tokens(), heldout_blocks = #heldout,
  tokens_seen_at_most = state.step * tokens_per_step, seconds_this_run = ts.clock() - started,
  evaluations = state.evaluations, losses = state.losses,
}, 2))
