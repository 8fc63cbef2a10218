// tandem data prepare: text files -> tokenizer and token shards.
#include <cstdio>

#include "tandem/cli/commands.h"
#include "tandem/data/prepare.h"

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
}

}  // namespace tandem::cli
