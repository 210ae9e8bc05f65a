-- How much of a task do a model's frozen features already hold? A linear probe: the last layer's [CLS] output and
-- its mask-weighted mean over tokens, for a sample of training rows, standardised, then multinomial logistic
-- regression by full-batch gradient descent; accuracy on the test set. `init = "random"` probes the same
-- architecture freshly initialised, the baseline that pretraining has to beat.
--   twostage run recipes/probe_features.lua --set init=random
local ts = require "twostage"

local settings = ts.settings(ts.experiment.model_settings {
  train = { "data/sst2/train.tsv", "training rows for the probe" },
  test = { "data/sst2/dev.tsv", "rows it is scored on" },
  text_column = { "sentence", "text column" },
  label_column = { "label", "label column" },
  rows = { 4000, "training rows, spread evenly over the file" },
  max_length = { 128, "tokens per text" },
  iterations = { 3000, "gradient-descent steps of the probe" },
  l2 = { 1e-3, "L2 penalty of the probe's weights", type = "number" },
  seed = { 42, "seed of the random initialisation" },
})

local tokenizer = ts.tokenizer(settings.model)
ts.manual_seed(settings.seed)
-- Two labels for a head that is never used: the probe reads the encoder's states.
local model = ts.experiment.load_model({ model = settings.model, init = settings.init }, 2)
model:eval()

local columns = { text = settings.text_column, label = settings.label_column }
local train = ts.read_table(settings.train, columns)
local test = ts.read_table(settings.test, columns)
local stride = math.max(1, math.floor(train:size() / settings.rows))
local picked = {}
for row = 1, math.min(settings.rows, train:size()), 1 do picked[row] = (row - 1) * stride + 1 end
train = train:subset(picked)

-- [CLS] and mean-pooled last-layer states of every row, [rows, hidden] each.
local function features(dataset)
  local cls, mean = {}, {}
  ts.no_grad(function()
    for first = 1, dataset:size(), 64 do
      local texts = {}
      for row = first, math.min(dataset:size(), first + 63) do texts[#texts + 1] = dataset:text(row) end
      local batch = tokenizer:batch(texts, { max_length = settings.max_length })
      local _, _, hidden = model:forward(batch)
      local rows, length, width = hidden:size(1), hidden:size(2), hidden:size(3)
      cls[#cls + 1] = hidden:index_select(2, ts.tensor({ 1 }, "int64")):view(rows, width)
      local mask = batch.attention_mask:to("float32"):view(rows, length, 1)
      mean[#mean + 1] = (hidden * mask):sum(2) / mask:sum(2)
    end
  end)
  return { cls = ts.cat(cls, 1), mean = ts.cat(mean, 1) }
end

local function one_hot(dataset, classes)
  local rows = {}
  for row = 1, dataset:size() do
    rows[row] = {}
    for class = 0, classes - 1 do rows[row][class + 1] = dataset:label(row) == class and 1 or 0 end
  end
  return ts.tensor(rows, "float32")
end

local function accuracy(scores, dataset)
  local predicted, correct = scores:argmax(2), 0
  for row = 1, dataset:size() do
    if predicted[row] == dataset:label(row) then correct = correct + 1 end
  end
  return correct / dataset:size()
end

-- Softmax regression; the gradient X^T (p - Y) / n is written out, the step 4 / width is below 2 / L for
-- standardised features.
local function probe(x_train, x_test, classes)
  local centre = x_train:mean(1)
  local spread = ((x_train - centre):pow(2):mean(1) + 1e-6):sqrt()
  local a, b = (x_train - centre) / spread, (x_test - centre) / spread
  local targets = one_hot(train, classes)
  local rows, width = a:size(1), a:size(2)
  local weight, bias, step = ts.zeros(width, classes), ts.zeros(classes), 4 / width
  for _ = 1, settings.iterations do
    local residual = (a:matmul(weight) + bias):softmax(2) - targets
    weight = weight - (a:t():matmul(residual) / rows + weight * settings.l2) * step
    bias = bias - residual:mean(1) * step
  end
  return accuracy(a:matmul(weight) + bias, train), accuracy(b:matmul(weight) + bias, test)
end

local classes = math.max(train:num_classes(), test:num_classes())
local train_features, test_features = features(train), features(test)
local results = { init = settings.init, model = settings.model, rows = train:size() }
for _, pooling in ipairs({ "cls", "mean" }) do
  local fit, score = probe(train_features[pooling], test_features[pooling], classes)
  results[pooling] = { train_accuracy = fit, test_accuracy = score }
  ts.log("probe", string.format("%s %s features: test accuracy %.4f (train %.4f, %d rows)", settings.init, pooling,
    score, fit, train:size()), { pooling = pooling, test_accuracy = score, train_accuracy = fit })
end
ts.write_file(ts.run_dir() .. "/metrics.json", ts.json_encode(results, 2))
