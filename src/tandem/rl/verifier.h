// Verifiers: rewards a program can check, for GRPO and for exact-match evaluation. Each scores
// a batch of (prompt, completion, reference) samples. Built in: the final answer matches the
// reference (numbers normalised), a regular expression matches (a format check), and the
// countdown task (an arithmetic expression over given numbers reaches a target; the
// expression is parsed and evaluated exactly, never handed to an interpreter). External: a
// command in any language reads the samples as JSONL on stdin and writes one reward per line.
// A verifier that crashes, hangs or prints garbage is an Error naming it (or, with
// on_error = "zero", scores 0 and says why): never silently ignored.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace tandem {

struct Sample {
  std::string prompt, completion, reference;
};

struct VerifierSpec {
  std::string name;      // how errors and logs call it
  std::string kind;      // exact_match, regex, countdown, command
  std::string pattern;   // regex: ECMAScript syntax, searched anywhere in the completion
  std::string command;   // command: run with /bin/sh -c
  double timeout_s = 30;             // command: for the whole batch
  std::string on_error = "stop";     // command: "stop" (an Error) or "zero" (rewards 0)
};

class Verifier {
 public:
  virtual ~Verifier() = default;
  const std::string& name() const { return name_; }
  // One reward per sample. `why`, when set, receives a reason for scoring a failed batch 0.
  virtual std::vector<double> score(const std::vector<Sample>& batch,
                                    std::string* why = nullptr) = 0;

 protected:
  std::string name_;
};

// Throws Error "[verifier] NAME: ..." for an unknown kind or a bad pattern.
std::unique_ptr<Verifier> make_verifier(const VerifierSpec& spec);

// The final answer of a completion: the text after the last "answer:" / "####" / "\boxed{...}"
// marker if there is one, else its last number; nullopt when there is none.
std::optional<std::string> final_answer(const std::string& completion);
// Numbers compare by value ("1,000" = "1000" = "1000.0" = "+1e3"); other text by its trimmed,
// lower-cased form.
bool same_answer(const std::string& a, const std::string& b);

}  // namespace tandem
