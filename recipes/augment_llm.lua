-- Stage-1 data of the augmentation variant: down-sample train as the reference, then fill each class to the target
-- with LLM paraphrases (any OpenAI-compatible server), or offline with EDA or masked-LM substitution. Writes aug.csv
-- (org_ind,text,label; org_ind is the 0-based data row of the train file) and summary.json in the run folder.
-- See scripts/twostage/augment.lua for the steps.
--
--   OPENAI_API_KEY=... twostage run recipes/augment_llm.lua
--   twostage run recipes/augment_llm.lua --set base_url=http://localhost:8000/v1 --set api_key_env= --set model=M
--   twostage run recipes/augment_llm.lua --set augmenter=eda                                  (no API at all)
-- An interrupted run resumes without paying twice: run again with the same --out (or the same --set cache=PATH).
local ts = require "twostage"
local augment = require "twostage.augment"

local settings = ts.settings {
  train = {"data/sst2/train.tsv", "training data: TSV with a sentence and a label column (GLUE SST-2)"},
  text_column = {"sentence", "column holding the text"},
  label_column = {"label", "column holding the label"},
  out = {"", "path of aug.csv; empty: aug.csv in the run folder", output = true},
  ratio = {0.2, "minority/majority rate of the down-sampling applied first, as the reference (1: none)",
           type = "number"},
  minority = {{0}, "class ids the ratio down-samples (the reference: 0)"},
  limit = {0, "use only the first N rows of train after down-sampling, for a trial run (0: all)"},
  target = {"majority", "paraphrases per class: majority (the largest class's count), N, or N1,N2,... per class"},
  classes = {{}, "classes to fill, by name; empty: all, as the reference", type = "strings"},
  prompt = {augment.default_prompt, "instruction; the text follows after a \\n\\n---\\n\\n line, or replaces {text}"},
  augmenter = {"llm", "llm (chat API), eda (WordNet EDA) or mlm (masked-LM contextual substitution)"},
  model = {"gpt-3.5-turbo", "chat model"},
  base_url = {"https://api.openai.com/v1", "OpenAI-compatible endpoint (POST {base_url}/chat/completions)"},
  api_key_env = {"OPENAI_API_KEY", "environment variable holding the API key (empty: send none)"},
  concurrency = {32, "requests in flight at once"},
  rpm = {0, "requests per minute limit (0: none)", type = "number"},
  tpm = {0, "tokens per minute limit (0: none)", type = "number"},
  timeout = {60, "seconds per request attempt", type = "number"},
  max_retries = {5, "retries per request after the first attempt"},
  temperature = {1, "sampling temperature (1 is the API default the reference used)", type = "number"},
  max_tokens = {0, "longest reply in tokens (0: the server's default, as the reference)"},
  per_request = {1, "paraphrases asked per request (the API's n; the reference: 1), so the prompt is paid once"},
  request_seed = {-1, "seed sent with each request, plus pass * per_request: passes differ, re-runs repeat (-1: none)"},
  price_prompt = {0, "USD per million prompt tokens, for summary.json's cost (0: no cost reported)", type = "number"},
  price_completion = {0, "USD per million completion tokens", type = "number"},
  seed = {42, "seed of the down-sampling, the final per-class sample and the offline augmenters"},
  cache = {"", "SQLite cache of replies, reused to resume; empty: llm_cache.sqlite in the run folder", output = true},
  clean = {true, "clean replies and drop bad ones (false: keep every non-empty reply, as the reference)"},
  refill_rounds = {5, "extra passes for classes left short by rejections (0: none, as the reference)"},
  allow_short = {false, "accept classes still short of target after refill_rounds (summary.json: short); false: error"},
  filter_model = {"", "classifier folder: drop paraphrases it confidently puts in another class (empty: off)"},
  filter_confidence = {0.9, "probability above which filter_model's other class counts as confident",
                       type = "number"},
  similarity_model = {"", "encoder folder: drop paraphrases too close to or too far from their source (empty: off)"},
  similarity_low = {0.5, "cosine below which a paraphrase has drifted from its source", type = "number"},
  similarity_high = {0.95, "cosine above which a paraphrase is a near copy of its source", type = "number"},
  eda_alpha = {0.1, "EDA's alpha: share of words each operation changes", type = "number"},
  mlm_model = {"", "Hugging Face BertForMaskedLM folder, for augmenter=mlm"},
  mlm_fraction = {0.15, "share of words augmenter=mlm replaces", type = "number"},
  mlm_top_k = {10, "augmenter=mlm samples among the k most likely tokens"},
  device = {"cpu", "device of the masked LM and of filter_model (cpu, cuda)"},
}

if not (settings.ratio > 0 and settings.ratio <= 1) then
  error(("setting 'ratio': %s; expected a minority/majority rate in (0, 1], 1 for no down-sampling"):format(
    tostring(settings.ratio)), 0)
end
local train = ts.read_table(settings.train, {text = settings.text_column, label = settings.label_column})
ts.experiment.check_labels(train)
local org_ind = {}
if settings.ratio < 1 then
  local rows
  train, rows = ts.downsample(train, {rate = settings.ratio, minority = settings.minority, seed = settings.seed,
                                      shuffle = true})
  for i, row in ipairs(rows) do org_ind[i] = row - 1 end
else
  for i = 1, #train do org_ind[i] = i - 1 end
end
if settings.limit > 0 and settings.limit < #train then
  local first = {}
  for i = 1, settings.limit do first[i] = i end
  train = train:subset(first)
end
ts.log("augment.train", ("train: %d rows, class counts %s"):format(#train, ts.json_encode(train:class_counts())),
       {rows = #train, class_counts = train:class_counts()})

local client, augmenter
if settings.augmenter == "llm" then
  local cache = settings.cache ~= "" and settings.cache or (ts.run_dir() .. "/llm_cache.sqlite")
  client = ts.llm_client {
    model = settings.model, base_url = settings.base_url, api_key_env = settings.api_key_env,
    concurrency = settings.concurrency, rpm = settings.rpm, tpm = settings.tpm, timeout = settings.timeout,
    max_retries = settings.max_retries, temperature = settings.temperature, cache = cache,
    max_tokens = settings.max_tokens > 0 and settings.max_tokens or nil,
  }
  ts.log("augment.cache", "replies are cached in " .. cache .. "; rerun with the same cache to resume", {cache = cache})
elseif settings.augmenter == "eda" then
  augmenter = ts.eda {seed = settings.seed, alpha = settings.eda_alpha}
elseif settings.augmenter == "mlm" then
  if settings.mlm_model == "" then error("augmenter=mlm needs --set mlm_model=DIR (a BertForMaskedLM folder)", 0) end
  augmenter = ts.contextual_augmenter {model = settings.mlm_model, fraction = settings.mlm_fraction,
                                       top_k = settings.mlm_top_k, seed = settings.seed, device = settings.device}
else
  error(("augmenter '%s': expected llm, eda or mlm"):format(settings.augmenter), 0)
end

local out = settings.out ~= "" and settings.out or (ts.run_dir() .. "/aug.csv")
local _, summary = augment.run {
  train = train, org_ind = org_ind, target = settings.target, classes = settings.classes,
  augmenter = client and "llm" or augmenter, augmenter_name = settings.augmenter, client = client,
  prompt = settings.prompt, clean = settings.clean, refill_rounds = settings.refill_rounds, seed = settings.seed,
  filter = {model = settings.filter_model, confidence = settings.filter_confidence, device = settings.device},
  similarity = {model = settings.similarity_model, low = settings.similarity_low, high = settings.similarity_high,
                device = settings.device},
  per_request = settings.per_request, request_seed = settings.request_seed >= 0 and settings.request_seed or nil,
  prices = {prompt = settings.price_prompt, completion = settings.price_completion},
  out = out, summary = ts.run_dir() .. "/summary.json", allow_short = settings.allow_short,
}
print(("aug.csv: %d rows at %s"):format(summary.rows_written, out))
