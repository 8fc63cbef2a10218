// tandem data prepare: text files -> tokenizer and token shards.
// tandem data synth: a synthetic task's SFT and RL sets.
#include <cstdio>

#include "tandem/cli/commands.h"
#include "tandem/data/prepare.h"
#include "tandem/rl/tasks.h"

namespace tandem::cli {

void add_data(CLI::App& app, Action& action) {
  auto* data = app.add_subcommand("data", "prepare datasets");
  data->require_subcommand(1);
  auto* prep = data->add_subcommand("prepare", "train a tokenizer and write train/val shards");
  auto opts = std::make_shared<PrepareOptions>();
  prep->add_option("--input,-i", opts->input_files, "UTF-8 text files (one document per line)")
      ->required();
  prep->add_option("--out,-o", opts->out_dir, "output dataset directory")->required();
  prep->add_option("--vocab-size", opts->vocab_size, "tokenizer vocabulary size")
      ->capture_default_str();
  prep->add_option("--val-fraction", opts->val_fraction, "share of documents held out")
      ->capture_default_str();
  prep->add_option("--seed", opts->seed, "tokenizer sampling seed")->capture_default_str();
  prep->add_flag("--overwrite", opts->overwrite, "replace an existing dataset directory");
  prep->callback([&action, opts] { action = [opts] { prepare_dataset(*opts); }; });

  auto* synth = data->add_subcommand("synth", "write a synthetic task's SFT and RL sets (JSONL)");
  auto so = std::make_shared<SynthOptions>();
  synth->add_option("--task", so->task, "addition or countdown")->required();
  synth->add_option("--out,-o", so->out_dir, "output directory")->required();
  synth->add_option("--seed", so->seed, "the problems' seed")->capture_default_str();
  synth->add_option("--digits", so->digits, "addition: digits per number; countdown: numbers up "
                    "to 5 x digits")->capture_default_str();
  synth->add_option("--sft-train", so->sft_train, "labelled training chats")->capture_default_str();
  synth->add_option("--sft-val", so->sft_val, "labelled held-out chats")->capture_default_str();
  synth->add_option("--rl-train", so->rl_train, "prompts with references for RL")
      ->capture_default_str();
  synth->add_option("--rl-val", so->rl_val, "held-out prompts with references")
      ->capture_default_str();
  synth->add_option("--corpus", so->corpus, "documents of solved problems for pre-training "
                    "(corpus.txt, none from the splits)")->capture_default_str();
  synth->add_flag("--overwrite", so->overwrite, "replace an existing directory");
  synth->callback([&action, so] {
    action = [so] {
      write_synth_task(*so);
      std::fprintf(stderr, "[synth] %s: %d + %d SFT chats, %d + %d RL prompts in %s\n",
                   so->task.c_str(), so->sft_train, so->sft_val, so->rl_train, so->rl_val,
                   so->out_dir.c_str());
    };
  });
}

}  // namespace tandem::cli
