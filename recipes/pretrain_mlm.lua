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

local pretrain = ts.pretrain
local run_dir = ts.run_dir()
local checkpoint = run_dir .. "/checkpoint"  -- run again with the same --out to resume from it

local tokenizer = ts.tokenizer(settings.from ~= "" and settings.from or settings.vocab)
local corpus, heldout = pretrain.corpus(tokenizer, settings.corpus, settings)
local masker = ts.masker(tokenizer, { probability = settings.mask_probability, whole_word = settings.whole_word })
local model, state = pretrain.model(settings, tokenizer, corpus, checkpoint)
pretrain.run { settings = settings, model = model, state = state, tokenizer = tokenizer, corpus = corpus,
               heldout = heldout, masker = masker, checkpoint = checkpoint, run_dir = run_dir }
