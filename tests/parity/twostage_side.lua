-- Twostage's half of the live parity tests (tests/parity/parity.py), driven by RUN_DIR/request.json, which the
-- Python side writes; everything it names lies in the run folder. Answers in RUN_DIR/twostage.json.
--   {"create": [{"kind": "classifier" | "mlm", "config": {...}, "seed": S, "num_labels": C, "folder": "a"}],
--    "score": [{"kind": "classifier" | "mlm", "folder": "b", "num_labels": C}], "texts": [...], "columns": [...],
--    "train": {"folder", "data", "num_labels", "steps", "batch_size", "lr", "warmup_steps", "clip", "optimizer",
--              "weight_decay", "loss": {kind, ...}, "out"}}
-- create: a freshly initialised model saved as Hugging Face would. score: a saved model's logits on `texts` in eval
-- mode, with the token ids it read (for an MLM only the vocabulary `columns`, 0-based, to keep the answer small).
-- train: `steps` batches of `data` in file order, dropout as the model's config says, the loss and parameters
-- after; the batches' ids go back too, so both sides train on exactly the same tensors.
local ts = require "twostage"

local run_dir = ts.run_dir()
local request = ts.json_decode(ts.read_file(run_dir .. "/request.json"))
local answer = { score = {}, train = nil }

local function path(folder) return run_dir .. "/" .. folder end

local function load(kind, folder, num_labels)
  if kind == "mlm" then return ts.masked_lm(path(folder)) end
  return ts.load_classifier(path(folder), { head = "hf", num_labels = num_labels })
end

for _, spec in ipairs(request.create or {}) do
  ts.manual_seed(spec.seed)
  local model = spec.kind == "mlm" and ts.masked_lm(spec.config)
    or ts.classifier_from_config(spec.config, { head = "hf", num_labels = spec.num_labels })
  model:save(path(spec.folder))
  ts.tokenizer(path(spec.tokenizer)):save(path(spec.folder))
end

for _, spec in ipairs(request.score or {}) do
  local model = load(spec.kind, spec.folder, spec.num_labels)
  model:eval()
  local batch = ts.tokenizer(path(spec.folder)):batch(request.texts)
  local logits = model:forward(batch)
  if spec.kind == "mlm" then
    local rows, length, vocab = logits:size(1), logits:size(2), logits:size(3)
    local columns = {}
    for i, column in ipairs(request.columns) do columns[i] = column + 1 end
    logits = logits:view(rows * length, vocab):index_select(2, columns):view(rows, length, #columns)
  end
  answer.score[#answer.score + 1] = { folder = spec.folder, input_ids = batch.input_ids:totable(),
                                      attention_mask = batch.attention_mask:totable(), logits = logits:totable() }
end

local spec = request.train
if spec then
  local model = load("classifier", spec.folder, spec.num_labels)
  local classes = {}
  for c = 1, spec.num_labels do classes[c] = tostring(c - 1) end
  local data = ts.read_table(path(spec.data), { text = "sentence", label = "label", classes = classes })
  local loader = ts.loader(data, ts.tokenizer(path(spec.folder)), { batch_size = spec.batch_size,
                                                                     sampler = "sequential" })
  model:set_trainable { "*" }
  model:train()
  local optimizer = ts.optimizer(model, { kind = spec.optimizer, lr = spec.lr, weight_decay = spec.weight_decay,
                                          no_decay = { "bias", "LayerNorm.weight" } })
  local schedule = ts.schedule(optimizer, { kind = "linear", warmup_steps = spec.warmup_steps,
                                            total_steps = spec.steps })
  local loss_spec = spec.loss
  loss_spec.counts = data:class_counts()
  local loss_fn = ts.loss(loss_spec)
  local steps = {}
  for batch in loader:epoch(1) do
    if #steps == spec.steps then break end
    local loss = loss_fn(model:forward(batch), batch.labels)
    loss:backward()
    steps[#steps + 1] = { loss = loss:item(), input_ids = batch.input_ids:totable(),
                          attention_mask = batch.attention_mask:totable(), labels = batch.labels:totable() }
    optimizer:step { clip = spec.clip }
    schedule:step()
    optimizer:zero_grad()
  end
  model:save(path(spec.out))
  answer.train = { steps = steps, loss = loss_fn:describe() }
end

ts.write_file(run_dir .. "/twostage.json", ts.json_encode(answer))
