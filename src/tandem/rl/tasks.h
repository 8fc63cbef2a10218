// Synthetic tasks to learn on, with answers a verifier checks: seeded and reproducible, so the
// whole pipeline (pre-train, SFT, GRPO) runs on two cores in minutes. `tandem data synth`
// writes them as JSONL: labelled chats for SFT and prompts with references for RL, each with a
// held-out split that shares no problem with the training split.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tandem {

struct TaskItem {
  std::string question;   // the user's turn
  std::string answer;     // a correct assistant turn
  std::string reference;  // what the task's verifier checks against
  std::string verifier;   // exact_match or countdown
};

// `count` distinct problems of `task` ("addition": two numbers of up to `digits` digits;
// "countdown": 3 or 4 numbers from 1..`digits * 5`, a target an expression over them reaches),
// drawn from (seed, index). Throws Error naming an unknown task.
std::vector<TaskItem> synth_task(const std::string& task, int count, uint64_t seed, int digits);

struct SynthOptions {
  std::string task, out_dir;
  uint64_t seed = 1;
  int sft_train = 400, sft_val = 100, rl_train = 2000, rl_val = 200;
  int corpus = 0;  // documents of solved problems for pre-training (corpus.txt; 0: none)
  int digits = 2;
  bool overwrite = false;
};
// Writes sft_train.jsonl, sft_val.jsonl, rl_train.jsonl, rl_val.jsonl, task.json and (corpus > 0)
// corpus.txt into
// out_dir (written aside and renamed: nothing half-written). No problem appears twice.
void write_synth_task(const SynthOptions& o);

}  // namespace tandem
