-- Paraphrase augmentation of a class-imbalanced train set, as the journal version of two-stage fine-tuning does it
-- (../shared/METHOD.md, "Stage 1, augmentation variant"), with the reference's defects fixed:
--
--   1. Plan: each class to fill gets `target` paraphrases by repeated passes over the (shuffled) train set, one
--      request per row per pass, the class stopping as soon as it has its target. The i-th request of class c is
--      row i mod n_c of that class, pass i div n_c; the pass is the request's sample_index, so that every pass is
--      its own cache entry. Requests go out pass by pass, in train order within a pass. A request asks for
--      `per_request` paraphrases (the API's n), so the prompt is paid once for all of them.
--   2. Generate: through an LLM client (client:map: concurrent, retried, cached; with `request_seed`, pass p sends
--      seed request_seed + p * per_request, so passes are distinct samples and a re-run is reproducible: llama.cpp
--      samples choice i with seed + i, so each request's choices take seeds of their own) or an offline augmenter
--      (EDA, masked-LM contextual substitution).
--   3. Clean: preambles, quotes and list marks are stripped; empty replies, refusals, echoes of the prompt or the
--      source, and duplicates are rejected, each reason counted; failed requests are counted as "failed".
--      Optionally a classifier drops paraphrases it confidently puts in another class ("classifier": the
--      label-consistency filter, e.g. with the vanilla model fine-tuned on the same data), and an encoder drops
--      those whose cosine similarity to their source is above a band ("near_copy") or below it ("drifted").
--   4. Refill: classes left short by rejections get further requests (the next passes), up to `refill_rounds`
--      times, as many as the class's yield so far says are needed. 0 rounds is the reference's single plan.
--   5. Sample exactly `target` per class with pandas' sample(n, random_state=seed), as the reference, and write
--      aug.csv (org_ind,text,label) atomically, and a summary.
local ts = require "twostage"

local augment = {}

-- The reference's prompt: one user message, this instruction, a separator, the text.
augment.default_prompt = "Rephrase the following phrase into a different phrase with similar meaning."
augment.separator = "\n\n---\n\n"

-- The rejection reasons a summary counts, in a fixed order.
augment.reasons = {"empty", "refusal", "echoed_prompt", "same_as_source", "duplicate", "failed", "classifier",
                   "near_copy", "drifted"}

-- The user message for `text`: `prompt` with "{text}" replaced, or prompt .. separator .. text as the reference.
function augment.prompt_for(prompt, text)
  local at = prompt:find("{text}", 1, true)
  if at then return prompt:sub(1, at - 1) .. text .. prompt:sub(at + 6) end
  return prompt .. augment.separator .. text
end

-- Which classes to fill: `classes` lists names (or 0-based ids as strings); empty or nil means all. Returns a list of
-- 0-based class ids in the order given.
function augment.fill_classes(class_names, classes)
  local ids = {}
  if classes == nil or #classes == 0 then
    for c = 1, #class_names do ids[c] = c - 1 end
    return ids
  end
  for _, wanted in ipairs(classes) do
    local found
    for c, name in ipairs(class_names) do
      if name == tostring(wanted) then found = c - 1 end
    end
    if found == nil and tonumber(wanted) and class_names[tonumber(wanted) + 1] then found = tonumber(wanted) end
    if found == nil then
      error(("classes: '%s' is not a class of the train set (its classes: %s)"):format(
        tostring(wanted), table.concat(class_names, ", ")), 2)
    end
    ids[#ids + 1] = found
  end
  return ids
end

-- Paraphrases wanted per filled class: target "majority" (the largest class's count, as the reference), a number
-- for every class, or a list (or "n1,n2,...") of one number per filled class. Returns {[class id] = count}.
function augment.targets(class_counts, fill, target)
  local targets = {}
  local per_class
  if type(target) == "string" and target ~= "majority" then
    per_class = {}
    for item in target:gmatch("[^,%s]+") do
      local n = tonumber(item)
      if not n or n < 0 or n ~= math.floor(n) then
        error(("target '%s': expected majority, a count, or one count per class separated by commas"):format(target), 2)
      end
      per_class[#per_class + 1] = n
    end
    if #per_class == 1 then per_class = per_class[1] end
  else
    per_class = target
  end
  if per_class == "majority" or per_class == nil then
    local largest = 0
    for _, n in ipairs(class_counts) do largest = math.max(largest, n) end
    for _, c in ipairs(fill) do targets[c] = largest end
  elseif type(per_class) == "number" then
    for _, c in ipairs(fill) do targets[c] = per_class end
  elseif type(per_class) == "table" then
    if #per_class ~= #fill then
      error(("target: %d counts for %d classes to fill"):format(#per_class, #fill), 2)
    end
    for i, c in ipairs(fill) do targets[c] = per_class[i] end
  else
    error("target: expected majority, a count, or one count per class", 2)
  end
  return targets
end

-- The requests that take each class from `first[c]` requests made to `first[c] + count[c]`: a list of
-- {row = 1-based row of the train set, class = id, sample_index = pass}, pass by pass, in train order within a pass.
-- `rows_of[c]` lists the rows of class c in train order.
function augment.plan(rows_of, first, count)
  local planned = {}
  for c, n in pairs(count) do
    local rows = rows_of[c]
    if n > 0 and (rows == nil or #rows == 0) then
      error(("class %d has no rows in the train set to paraphrase"):format(c), 2)
    end
    for i = first[c] or 0, (first[c] or 0) + n - 1 do
      planned[#planned + 1] = {row = rows[i % #rows + 1], class = c, sample_index = math.floor(i / #rows)}
    end
  end
  table.sort(planned, function(a, b)
    if a.sample_index ~= b.sample_index then return a.sample_index < b.sample_index end
    return a.row < b.row
  end)
  return planned
end

-- One CSV field per RFC 4180: quoted when it holds a comma, a quote, a line break or outer spaces.
function augment.csv_field(value)
  local text = tostring(value)
  if text:find('[,"\r\n]') or text:find("^%s") or text:find("%s$") then
    return '"' .. text:gsub('"', '""') .. '"'
  end
  return text
end

-- aug.csv: org_ind (0-based row of the train set the paraphrase came from), text, label (the class name).
function augment.csv(rows)
  local lines = {"org_ind,text,label"}
  for i, row in ipairs(rows) do
    lines[i + 1] = augment.csv_field(row.org_ind) .. "," .. augment.csv_field(row.text) .. "," ..
                   augment.csv_field(row.label)
  end
  return table.concat(lines, "\n") .. "\n"
end

-- ---- generators: request list -> one {text=..., error=..., cached=...} per request ----------------------------------

local function progress_logger(label, total)
  local started, last = ts.clock(), ts.clock()
  return function(done, final)
    local now = ts.clock()
    if not final and now - last < 10 then return end
    last = now
    local rate = done / math.max(now - started, 1e-9)
    ts.log("augment.progress", ("%s: %d/%d (%.1f/s)"):format(label, done, total, rate),
           {label = label, done = done, total = total})
  end
end

-- Through an LLM client: every request in one concurrent map(), `per_request` choices each.
local function llm_generator(client, prompt, options)
  local per_request = options.per_request or 1
  return function(requests, texts)
    local batch = {}
    for i, request in ipairs(requests) do
      batch[i] = {prompt = augment.prompt_for(prompt, texts[request.row]), sample_index = request.sample_index,
                  n = per_request > 1 and per_request or nil,
                  seed = options.request_seed
                    and ts.seed_streams.paraphrase_request(options.request_seed, request.sample_index, per_request)
                    or nil}
    end
    return client:map(batch, {label = options.label or "paraphrase", progress = options.progress})
  end
end

-- Through an offline augmenter with :augment(text, n) (EDA), or :augment_many(texts, n) (masked LM, batched).
local function offline_generator(augmenter, label)
  return function(requests, texts)
    local results = {}
    local log = progress_logger(label, #requests)
    if augmenter.augment_many then
      local chunk = 256
      for first = 1, #requests, chunk do
        local sources = {}
        for i = first, math.min(first + chunk - 1, #requests) do sources[#sources + 1] = texts[requests[i].row] end
        local variants = augmenter:augment_many(sources, 1)
        for j = 1, #sources do results[first + j - 1] = {ok = true, text = variants[j][1] or "", cached = false} end
        log(math.min(first + chunk - 1, #requests))
      end
    else
      for i, request in ipairs(requests) do
        results[i] = {ok = true, text = augmenter:augment(texts[request.row], 1)[1] or "", cached = false}
        log(i)
      end
    end
    log(#requests, true)
    return results
  end
end

-- A filter that drops paraphrases a classifier confidently puts in another class. Returns keep(texts, labels) ->
-- list of booleans.
function augment.classifier_filter(folder, options)
  options = options or {}
  local confidence = options.confidence or 0.9
  local model = ts.load_classifier(folder, {device = options.device})
  model:eval()
  local tokenizer = ts.tokenizer(folder)
  local batch_size = options.batch_size or 64
  return function(texts, labels, num_classes)
    local keep = {}
    for first = 1, #texts, batch_size do
      local chunk = {}
      for i = first, math.min(first + batch_size - 1, #texts) do chunk[#chunk + 1] = texts[i] end
      local probabilities = model:forward(tokenizer:batch(chunk, {max_length = options.max_length or 128}))
                                 :softmax():totable()
      for j, row in ipairs(probabilities) do
        if #row ~= num_classes then
          error(("filter_model %s predicts %d classes, the train set has %d"):format(folder, #row, num_classes), 0)
        end
        local best = 1
        for c = 2, #row do if row[c] > row[best] then best = c end end
        local i = first + j - 1
        keep[i] = not (best - 1 ~= labels[i] and row[best] >= confidence)
      end
    end
    return keep
  end
end

-- A filter that keeps paraphrases whose cosine similarity to their source, in the encoder's mean-pooled space
-- (model:embed), lies within [low, high]: above, a near copy teaches nothing new; below, the text has drifted from
-- what it paraphrases. Returns verdict(sources, texts) -> list of nil (kept), "near_copy" or "drifted", and the
-- similarities.
function augment.similarity_filter(folder, options)
  local low, high = options.low or 0, options.high or 1
  if not (low <= high) then error(("similarity band [%s, %s] is empty"):format(tostring(low), tostring(high)), 0) end
  local model = ts.load_classifier(folder, {device = options.device})
  model:eval()
  local tokenizer = ts.tokenizer(folder)
  local batch_size = options.batch_size or 64
  return function(sources, texts)
    local verdicts, similarities = {}, {}
    for first = 1, #texts, batch_size do
      local last = math.min(first + batch_size - 1, #texts)
      local source_chunk, text_chunk = {}, {}
      for i = first, last do
        source_chunk[#source_chunk + 1], text_chunk[#text_chunk + 1] = sources[i], texts[i]
      end
      local length = {max_length = options.max_length or 128}
      local cosines = (model:embed(tokenizer:batch(source_chunk, length)) *
                       model:embed(tokenizer:batch(text_chunk, length))):sum(2):totable()
      for j, cosine in ipairs(cosines) do
        local i = first + j - 1
        similarities[i] = cosine
        verdicts[i] = cosine > high and "near_copy" or cosine < low and "drifted" or nil
      end
    end
    return verdicts, similarities
  end
end

-- ---- the pipeline: run() and its five steps ----------------------------------------------------------------------

-- The job run() works through: its inputs resolved, and what the rounds have gathered so far.
local function new_job(options)
  local train = assert(options.train, "augment.run: train (a Dataset) is required")
  local job = {train = train, options = options, started = ts.clock()}
  job.texts, job.labels, job.class_names = train:texts(), train:labels(), train:classes()
  job.class_counts = train:class_counts()
  job.fill = augment.fill_classes(job.class_names, options.classes)
  job.targets = augment.targets(job.class_counts, job.fill, options.target or "majority")
  job.prompt = options.prompt or augment.default_prompt
  job.clean = options.clean ~= false
  job.seed = options.seed or 42

  job.rows_of = {}
  for _, c in ipairs(job.fill) do job.rows_of[c] = {} end
  for row, label in ipairs(job.labels) do
    if job.rows_of[label] then table.insert(job.rows_of[label], row) end
  end

  job.kind = options.augmenter or "llm"
  if type(job.kind) == "string" and job.kind == "llm" then
    job.generate = llm_generator(assert(options.client, "augment.run: augmenter llm needs a client"), job.prompt,
                                 options)
  elseif type(job.kind) == "string" then
    error(("augment.run: augmenter '%s' is not an object; make it with ts.eda or ts.contextual_augmenter"):format(
      job.kind))
  else
    job.generate = offline_generator(job.kind, options.augmenter_name or "augment")
  end
  job.keep = options.filter and options.filter.model and options.filter.model ~= "" and
             augment.classifier_filter(options.filter.model, options.filter)
  job.similar = options.similarity and options.similarity.model and options.similarity.model ~= "" and
                augment.similarity_filter(options.similarity.model, options.similarity)
  -- Paraphrases per request: only an LLM request returns several.
  job.per_request = job.kind == "llm" and options.per_request or 1
  if job.per_request < 1 or job.per_request ~= math.floor(job.per_request) then
    error(("augment.run: per_request %s: expected a whole number of 1 or more"):format(tostring(job.per_request)), 0)
  end

  job.filter = ts.paraphrase_filter {prompt = job.prompt}
  job.rejected = {}
  for _, reason in ipairs(augment.reasons) do job.rejected[reason] = 0 end
  job.accepted, job.made, job.shortfall = {}, {}, {}
  for _, c in ipairs(job.fill) do
    job.accepted[c], job.made[c], job.shortfall[c] = {}, 0, job.targets[c]
  end
  job.requests_total, job.rounds = 0, 0
  job.spent = {prompt = 0, completion = 0, total = 0}  -- the server's usage of every reply used, cached ones too
  return job
end

-- Step 1, plan: the requests of one round. A refill asks for the shortfall divided by the class's yield so far (at
-- most 4 times the shortfall), so that one round usually suffices; the final sample keeps exactly `target` of what
-- it brings. made[c] counts requests, each worth per_request paraphrases.
local function plan_round(job)
  local asked = {}
  for _, c in ipairs(job.fill) do
    local yield = job.made[c] > 0 and #job.accepted[c] / (job.made[c] * job.per_request) or 1
    asked[c] = job.shortfall[c] > 0 and math.ceil(job.shortfall[c] / math.max(yield, 0.25) / job.per_request) or 0
  end
  local planned = augment.plan(job.rows_of, job.made, asked)
  for _, c in ipairs(job.fill) do job.made[c] = job.made[c] + asked[c] end
  job.requests_total = job.requests_total + #planned
  return planned
end

-- Step 3a, clean: each reply of each request cleaned, or counted under its rejection reason. Returns the fresh
-- paraphrases {row, class, text}. A round in which nothing came back (a wrong model name, a server that answers
-- every request with an error) would end in an empty or short file, and more rounds would only ask again: an error.
local function clean_round(job, round, planned, results)
  local fresh, rejected = {}, job.rejected
  local failed, first_failure = 0, nil
  for i, request in ipairs(planned) do
    local result = results[i]
    local source = job.texts[request.row]
    if not result.ok then
      rejected.failed = rejected.failed + job.per_request
      failed = failed + 1
      first_failure = first_failure or result.error
    else
      for key in pairs(job.spent) do job.spent[key] = job.spent[key] + (result[key .. "_tokens"] or 0) end
      -- A server may return fewer choices than asked; each missing one counts as an empty reply.
      for choice = 1, job.per_request do
        local reply = (result.texts and result.texts[choice]) or (choice == 1 and result.text) or ""
        local text, reason
        if job.clean then
          text, reason = job.filter:add(source, reply)
        else
          text = reply
          if not text:find("%S") then text, reason = nil, "empty" end
        end
        if text then
          fresh[#fresh + 1] = {row = request.row, class = request.class, text = text}
        else
          rejected[reason] = (rejected[reason] or 0) + 1
        end
      end
    end
  end
  if failed == #planned then
    error(("augment: all %d requests of round %d failed; the first: %s"):format(
      failed, round, tostring(first_failure or "no error given")), 0)
  end
  return fresh
end

-- Step 3b, filter: the classifier's label-consistency check, then the encoder's similarity band.
local function filter_round(job, fresh)
  if job.keep and #fresh > 0 then
    local fresh_texts, fresh_labels = {}, {}
    for i, item in ipairs(fresh) do fresh_texts[i], fresh_labels[i] = item.text, item.class end
    local kept = job.keep(fresh_texts, fresh_labels, #job.class_names)
    local survivors = {}
    for i, item in ipairs(fresh) do
      if kept[i] then survivors[#survivors + 1] = item else job.rejected.classifier = job.rejected.classifier + 1 end
    end
    fresh = survivors
  end
  if job.similar and #fresh > 0 then
    local sources, fresh_texts = {}, {}
    for i, item in ipairs(fresh) do sources[i], fresh_texts[i] = job.texts[item.row], item.text end
    local verdicts = job.similar(sources, fresh_texts)
    local survivors = {}
    for i, item in ipairs(fresh) do
      if verdicts[i] then
        job.rejected[verdicts[i]] = job.rejected[verdicts[i]] + 1
      else
        survivors[#survivors + 1] = item
      end
    end
    fresh = survivors
  end
  return fresh
end

-- Keeps the round's survivors; true while some class is still short of its target.
local function still_short(job, fresh)
  for _, item in ipairs(fresh) do table.insert(job.accepted[item.class], item) end
  local short = false
  for _, c in ipairs(job.fill) do
    job.shortfall[c] = math.max(0, job.targets[c] - #job.accepted[c])
    short = short or job.shortfall[c] > 0
  end
  return short
end

-- Step 5a, sample: exactly `target` per class (fewer only if still short), chosen as pandas'
-- sample(n=target, random_state=seed). Returns the rows to write, per-class counts, and what short classes miss.
local function sample(job)
  local org_ind = job.options.org_ind
  local written, per_class, missing, short_classes = {}, {}, {}, {}
  for _, c in ipairs(job.fill) do
    local name = job.class_names[c + 1]
    local pool = job.accepted[c]
    local take = math.min(job.targets[c], #pool)
    for _, position in ipairs(ts.pandas_sample_positions(#pool, take, job.seed)) do
      local item = pool[position]
      written[#written + 1] = {org_ind = org_ind and org_ind[item.row] or item.row - 1, text = item.text,
                               label = name, class = c}
    end
    per_class[name] = {rows = job.class_counts[c + 1], target = job.targets[c], requests = job.made[c],
                       accepted = #pool, written = take}
    if take < job.targets[c] then
      missing[name] = job.targets[c] - take
      short_classes[#short_classes + 1] = ("class '%s' has %d of its target %d rows"):format(name, take,
                                                                                            job.targets[c])
    end
  end
  return written, per_class, missing, short_classes
end

-- Step 5b, the summary: counts, rejections, and for an LLM what was paid. tokens: what this run paid (cache hits
-- are free); tokens_used: the usage behind every reply this data came from, cached ones included, which is what the
-- data cost. Per accepted paraphrase, so that per_request and prompts compare; cost only with the user's prices
-- (none are built in: they change).
local function summarize(job, written, per_class, missing)
  local options = job.options
  local summary = {
    augmenter = type(job.kind) == "string" and job.kind or (options.augmenter_name or "offline"),
    train_rows = #job.train,
    classes = per_class,
    requests = job.requests_total,
    rounds = job.rounds,
    rejections = job.rejected,
    accepted = 0,
    rows_written = #written,
    short = next(missing) and missing or nil,
    allow_short = options.allow_short == true,
    seconds = ts.clock() - job.started,
    clean = job.clean,
  }
  for _, c in ipairs(job.fill) do summary.accepted = summary.accepted + #job.accepted[c] end
  if options.client then
    local stats = options.client:stats()
    local settings = options.client:settings()
    local spent = job.spent
    summary.llm = {model = settings.model, base_url = settings.base_url, requests_sent = stats.requests_sent,
                   cache_hits = stats.cache_hits, retries = stats.retries, failures = stats.failures,
                   per_request = job.per_request, request_seed = options.request_seed,
                   tokens = {prompt = stats.prompt_tokens, completion = stats.completion_tokens,
                             total = stats.total_tokens},
                   tokens_used = spent}
    if summary.accepted > 0 then
      summary.llm.tokens_per_accepted = {prompt = spent.prompt / summary.accepted,
                                         completion = spent.completion / summary.accepted,
                                         total = spent.total / summary.accepted}
    end
    local prices = options.prices or {}
    if (prices.prompt or 0) > 0 or (prices.completion or 0) > 0 then
      local cost = (spent.prompt * (prices.prompt or 0) + spent.completion * (prices.completion or 0)) / 1e6
      summary.llm.cost = cost
      summary.llm.cost_per_accepted = summary.accepted > 0 and cost / summary.accepted or nil
    end
  end
  return summary
end

-- Step 5c, write: aug.csv and summary.json, and the log's account. The promise is exactly `target` rows per class:
-- a short class fails the run (its summary.json says why) unless the caller accepts fewer.
local function write(job, written, summary, missing, short_classes)
  local options = job.options
  local reasons = {}
  for _, reason in ipairs(augment.reasons) do
    if job.rejected[reason] > 0 then reasons[#reasons + 1] = ("%s %d"):format(reason, job.rejected[reason]) end
  end
  local rejections = #reasons > 0 and table.concat(reasons, ", ") or "none"
  if summary.short and not options.allow_short then
    if options.summary then ts.write_file(options.summary, ts.json_encode(summary, 2)) end
    error(("augment: after %d round(s), %s (rejected: %s); raise refill_rounds, or set allow_short=true to accept "
           .. "fewer"):format(job.rounds, table.concat(short_classes, "; "), rejections), 0)
  end
  if options.out then
    ts.write_file(options.out, augment.csv(written))
    summary.out = options.out
  end
  local message = ("%d rows written from %d requests in %d round(s); rejected: %s"):format(
    #written, job.requests_total, job.rounds, rejections)
  if summary.llm then
    message = message .. ("; %d HTTP requests, %d cache hits, %d retries, %d tokens"):format(
      summary.llm.requests_sent, summary.llm.cache_hits, summary.llm.retries, summary.llm.tokens.total)
  end
  ts.log("augment.summary", message, summary)
  if summary.short then
    ts.log("augment.short", "some classes stayed below their target: " .. ts.json_encode(missing), {short = missing},
           "warn")
  end
  if options.summary then ts.write_file(options.summary, ts.json_encode(summary, 2)) end
end

-- run{train = Dataset, target = "majority", classes = {names}, augmenter = "llm" | "eda" | "mlm" | object,
--     client = llm client (augmenter "llm"), prompt = ..., clean = true, refill_rounds = 3, seed = 42,
--     filter = {model = DIR, confidence = 0.9, device = "cpu"},
--     similarity = {model = DIR, low = 0.5, high = 0.95, device = "cpu"}, per_request = 1, request_seed = nil,
--     prices = {prompt = USD per 1M tokens, completion = ...}, org_ind = {the org_ind of each train row; default:
--     its 0-based row}, out = PATH,
--     summary = PATH, progress = true, allow_short = false}
-- Returns the written rows ({org_ind, text, label, class}) and the summary table. A class still short of its target
-- after the refill rounds is an error naming it and its counts, unless allow_short: then the summary's `short` says
-- how many each class misses. A round whose every request failed is an error with the first request's.
function augment.run(options)
  local job = new_job(options)
  -- Step 4, refill: round 0 is the plan; each later round asks again for what rejections left short.
  for round = 0, options.refill_rounds or 0 do
    local planned = plan_round(job)
    if #planned == 0 then break end
    job.rounds = round + 1
    if round > 0 then
      ts.log("augment.refill",
        ("refill round %d: %d more requests for rejected or failed ones"):format(round, #planned),
        {round = round, requests = #planned})
    end
    local results = job.generate(planned, job.texts)  -- step 2, generate
    if not still_short(job, filter_round(job, clean_round(job, round, planned, results))) then break end
  end
  local written, per_class, missing, short_classes = sample(job)
  local summary = summarize(job, written, per_class, missing)
  write(job, written, summary, missing, short_classes)
  return written, summary
end

return augment
