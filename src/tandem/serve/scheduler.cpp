// The scheduler loop: admit queued sequences into free KV slots, build one batch (decodes
// first, then prompt chunks within the step's token budget), sample each sequence's next
// token from its own counter-based stream, apply stop rules and publish text deltas.
#include "tandem/serve/scheduler.h"

#include "tandem/data/chat.h"

#include <unistd.h>

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <span>

#include "tandem/core/error.h"
#include "tandem/core/rng.h"
#include "tandem/infer/sampler.h"

namespace tandem::serve {

using Clock = std::chrono::steady_clock;

Job::Job(GenRequest req, std::vector<std::vector<int32_t>> prompts)
    : req_(std::move(req)), prompts_(std::move(prompts)) {}

int64_t Job::prompt_tokens() const {
  int64_t n = 0;
  for (const auto& p : prompts_) n += (int64_t)p.size() * req_.n;
  return n;
}

bool Job::wait(std::vector<Update>& out, std::chrono::milliseconds timeout,
                std::chrono::microseconds min_gap) {
  std::unique_lock lk(mu_);
  auto ended = [&] { return finished_ == num_choices() || !error_.empty(); };
  // Until min_gap has passed since the last delivery, only the end wakes us: tokens published
  // meanwhile accumulate and go out together.
  if (min_gap.count() > 0 && delivered_) cv_.wait_until(lk, last_delivery_ + min_gap, ended);
  eager_ = true;
  cv_.wait_for(lk, timeout, [&] { return !pending_.empty() || ended(); });
  eager_ = false;
  if (!pending_.empty()) {
    delivered_ = true;
    last_delivery_ = std::chrono::steady_clock::now();
  }
  for (auto& u : pending_) out.push_back(std::move(u));
  pending_.clear();
  return ended();
}

std::string Job::error() const {
  std::lock_guard lk(mu_);
  return error_;
}

void Job::publish(int choice, std::string delta, TokenLogprob* lp, const std::string& finish) {
  std::lock_guard lk(mu_);
  // Merge into the choice's pending update when the handler has not collected it yet.
  Update* u = nullptr;
  for (auto& p : pending_)
    if (p.choice == choice && p.finish_reason.empty()) u = &p;
  if (!u) {
    pending_.push_back(Update{choice, "", {}, ""});
    u = &pending_.back();
  }
  u->delta += delta;
  if (lp) u->logprobs.push_back(std::move(*lp));
  if (!finish.empty()) {
    u->finish_reason = finish;
    ++finished_;
  }
  if (eager_ || !finish.empty()) cv_.notify_all();
}

void Job::fail(const std::string& msg) {
  std::lock_guard lk(mu_);
  error_ = msg;
  cv_.notify_all();
}

struct Scheduler::Seq {
  std::shared_ptr<Job> job;
  int choice = 0;
  int slot = -1;
  std::vector<int32_t> ids;  // prompt then generated tokens
  int prompt_len = 0, prefilled = 0, generated = 0, max_new = 0;
  SamplingParams sp;
  std::string text;  // generated text so far (after stop truncation)
  size_t sent = 0;   // bytes of text published
};

Scheduler::Scheduler(BatchEngine& engine, const Tokenizer& tok, const SchedulerOptions& opt)
    : engine_(engine), tok_(tok), opt_(opt), ttft_buckets_(kTtftBuckets.size(), 0),
      turn_end_(tok.piece_id(kTurnEnd)) {
  slots_.resize(engine_.options().slots);
  thread_ = std::thread([this] { loop(); });
}

Scheduler::~Scheduler() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

bool Scheduler::submit(const std::shared_ptr<Job>& job) {
  const GenRequest& r = job->request();
  std::vector<std::unique_ptr<Seq>> seqs;
  std::random_device rd;
  for (size_t p = 0; p < job->prompts().size(); ++p)
    for (int j = 0; j < r.n; ++j) {
      auto s = std::make_unique<Seq>();
      s->job = job;
      s->choice = (int)p * r.n + j;
      s->ids = job->prompts()[p];
      s->prompt_len = (int)s->ids.size();
      const int room = engine_.options().max_seq - s->prompt_len;
      s->max_new = r.max_tokens < 0 ? room : std::min(r.max_tokens, room);
      s->sp.temperature = r.temperature;
      s->sp.top_k = r.top_k;
      s->sp.top_p = r.top_p;
      // Choice 0 of a seeded request samples exactly as `tandem generate --seed` does.
      const uint64_t base = r.seed ? *r.seed : ((uint64_t)rd() << 32 | rd());
      s->sp.seed = s->choice == 0 ? base : rng_u64(base, 0x5eed, (uint64_t)s->choice);
      seqs.push_back(std::move(s));
    }
  {
    std::lock_guard lk(mu_);
    int free_slots = 0;
    for (const auto& s : slots_) free_slots += s ? 0 : 1;
    const int64_t waiting = (int64_t)queue_.size() + (int64_t)seqs.size() - free_slots;
    if (waiting > opt_.max_queue) return false;
    for (auto& s : seqs) queue_.push_back(std::move(s));
  }
  cv_.notify_all();
  return true;
}

SchedulerStats Scheduler::stats() const {
  std::lock_guard lk(mu_);
  SchedulerStats st;
  st.queued = (int64_t)queue_.size();
  for (const auto& s : slots_) st.active += s ? 1 : 0;
  st.prompt_tokens = prompt_tokens_;
  st.completion_tokens = completion_tokens_;
  st.steps = steps_;
  st.step_tokens = step_tokens_;
  st.forward_seconds = forward_seconds_;
  st.step_seconds = step_seconds_;
  st.cancelled = cancelled_;
  st.ttft_count = ttft_count_;
  st.ttft_sum = ttft_sum_;
  st.ttft_buckets = ttft_buckets_;
  if (recent_.size() >= 2) {
    int tokens = 0;
    for (size_t i = 1; i < recent_.size(); ++i) tokens += recent_[i].second;
    const double span = recent_.back().first - recent_.front().first;
    if (span > 0) st.tokens_per_second = tokens / span;
  }
  return st;
}

void Scheduler::loop() {
  std::vector<Seq*> active;
  while (true) {
    {
      std::unique_lock lk(mu_);
      auto has_work = [&] {
        if (stop_) return true;
        for (const auto& s : slots_)
          if (s) return true;
        return !queue_.empty();
      };
      cv_.wait(lk, has_work);
      if (stop_) break;
      // Drop cancelled sequences, queued or running, then admit into free slots.
      for (auto it = queue_.begin(); it != queue_.end();)
        if ((*it)->job->cancelled()) {
          it = queue_.erase(it);
          ++cancelled_;
        } else {
          ++it;
        }
      for (auto& s : slots_)
        if (s && s->job->cancelled()) {
          s.reset();
          ++cancelled_;
        }
      for (int i = 0; i < (int)slots_.size() && !queue_.empty(); ++i)
        if (!slots_[i]) {
          slots_[i] = std::move(queue_.front());
          queue_.pop_front();
          slots_[i]->slot = i;
          engine_.reset(i);
        }
      active.clear();
      for (auto& s : slots_)
        if (s) active.push_back(s.get());
      running_.store((int)active.size(), std::memory_order_relaxed);
    }
    if (active.empty()) continue;
    if (!opt_.hold_file.empty() && ::access(opt_.hold_file.c_str(), F_OK) == 0) {
      std::unique_lock lk(mu_);
      cv_.wait_for(lk, std::chrono::milliseconds(10), [&] { return stop_; });
      continue;
    }
    try {
      run_step(active);
    } catch (const std::exception& e) {
      std::lock_guard lk(mu_);
      for (auto& s : slots_)
        if (s) {
          s->job->fail(std::string("the engine failed: ") + e.what());
          s.reset();
        }
      continue;
    }
    std::lock_guard lk(mu_);
    for (auto& s : slots_)
      if (s && s->sent == std::string::npos) s.reset();  // finished in run_step
  }
}

namespace {

// Bytes at the end of `text` that could start one of the stop sequences: held back from the
// stream until the next token decides.
size_t held_back(const std::string& text, const std::vector<std::string>& stops) {
  size_t hold = 0;
  for (const auto& s : stops)
    for (size_t k = std::min(s.size() - 1, text.size()); k > hold; --k)
      if (text.compare(text.size() - k, k, s, 0, k) == 0) {
        hold = k;
        break;
      }
  return hold;
}

// A token's text as it appears in the output: SentencePiece's word marker becomes a space and
// a byte piece (<0x0A>) the byte it stands for.
std::string token_text(const Tokenizer& tok, int32_t id) {
  std::string p = tok.id_to_piece(id);
  if (p.size() == 6 && p.compare(0, 3, "<0x") == 0 && p[5] == '>')
    return std::string(1, (char)std::stoi(p.substr(3, 2), nullptr, 16));
  std::string out;
  for (size_t i = 0; i < p.size();) {
    if (p.compare(i, 3, "\xe2\x96\x81") == 0) {
      out += ' ';
      i += 3;
    } else {
      out += p[i++];
    }
  }
  return out;
}

TokenLogprob logprobs_of(const Tokenizer& tok, std::span<const float> row, int32_t chosen,
                         int top) {
  float mx = -INFINITY;
  for (float v : row) mx = std::max(mx, v);
  double sum = 0;
  for (float v : row) sum += std::exp((double)v - mx);
  const double lse = mx + std::log(sum);
  TokenLogprob lp;
  lp.token = token_text(tok, chosen);
  lp.logprob = (float)(row[chosen] - lse);
  if (top > 0) {
    std::vector<int32_t> idx(row.size());
    for (size_t i = 0; i < idx.size(); ++i) idx[i] = (int32_t)i;
    top = std::min<int>(top, (int)idx.size());
    std::partial_sort(idx.begin(), idx.begin() + top, idx.end(), [&](int32_t a, int32_t b) {
      return row[a] > row[b] || (row[a] == row[b] && a < b);
    });
    for (int i = 0; i < top; ++i) lp.top.push_back({token_text(tok, idx[i]), (float)(row[idx[i]] - lse)});
  }
  return lp;
}

}  // namespace

void Scheduler::run_step(std::vector<Seq*>& active) {
  // Decodes first (one token each), then prompt chunks with what is left of the budget.
  int budget = engine_.options().max_step_tokens;
  std::vector<BatchEngine::Item> items;
  std::vector<Seq*> who;
  for (Seq* s : active)
    if (s->prefilled == s->prompt_len && budget > 0) {
      items.push_back({s->slot, &s->ids.back(), 1, false});
      who.push_back(s);
      --budget;
    }
  for (Seq* s : active)
    if (s->prefilled < s->prompt_len && budget > 0) {
      const int n = std::min(budget, s->prompt_len - s->prefilled);
      items.push_back({s->slot, s->ids.data() + s->prefilled, n, false});
      who.push_back(s);
      budget -= n;
    }
  if (items.empty()) return;
  const auto start = Clock::now();
  const float* logits = engine_.step(items);
  const int V = engine_.model().config().vocab_size;
  const auto now = Clock::now();
  int step_tokens = 0;
  for (const auto& it : items) step_tokens += it.n;
  // Rows that yield a token (decodes and last prompt chunks) are sampled in parallel: each
  // draw depends only on its own row, seed and position, so the order does not matter.
  const int count = (int)items.size();
  std::vector<char> emits(count);
  for (int i = 0; i < count; ++i)
    emits[i] = who[i]->prefilled == who[i]->prompt_len ||
               who[i]->prefilled + items[i].n == who[i]->prompt_len;
  std::vector<int32_t> next_of(count, -1);
  std::vector<TokenLogprob> lp_of(count);
  std::vector<std::string> err_of(count);
  const int nthreads = opt_.threads > 0 ? opt_.threads : omp_get_max_threads();
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads) if (count > 1)
  for (int i = 0; i < count; ++i) {
    if (!emits[i]) continue;
    try {
      const Seq& s = *who[i];
      const GenRequest& r = s.job->request();
      std::span<const float> row(logits + (size_t)i * V, V);
      std::vector<float> held;
      if (s.generated < r.min_tokens) {  // min_tokens: no end before that many tokens
        held.assign(row.begin(), row.end());
        held[(size_t)tok_.eos_id()] = -std::numeric_limits<float>::infinity();
        if (turn_end_ >= 0) held[(size_t)turn_end_] = -std::numeric_limits<float>::infinity();
        row = std::span<const float>(held);
      }
      next_of[i] = sample_token(row, s.sp, s.ids.size());
      if (r.logprobs) lp_of[i] = logprobs_of(tok_, row, next_of[i], r.top_logprobs);
    } catch (const std::exception& e) {
      err_of[i] = e.what();
    }
  }
  for (const auto& e : err_of)
    if (!e.empty()) throw Error(e);
  int new_tokens = 0, prompt_tokens = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    Seq& s = *who[i];
    if (s.prefilled < s.prompt_len) {
      s.prefilled += items[i].n;
      prompt_tokens += items[i].n;
      if (s.prefilled < s.prompt_len) continue;  // more prompt to go
    }
    const int32_t next = next_of[i];
    const GenRequest& r = s.job->request();
    TokenLogprob& lp = lp_of[i];
    // The end of a sequence, or of the assistant's turn in the chat format.
    const bool ends = next == tok_.eos_id() || (next == turn_end_ && turn_end_ >= 0);
    if (r.logprobs && ends) lp.token.clear();  // counted in usage, adds no text
    if (!s.job->first_token_) {
      s.job->first_token_ = true;
      const double t = std::chrono::duration<double>(now - s.job->arrival_).count();
      std::lock_guard lk(mu_);
      ++ttft_count_;
      ttft_sum_ += t;
      for (size_t b = 0; b < kTtftBuckets.size(); ++b)
        if (t <= kTtftBuckets[b]) ++ttft_buckets_[b];
    }
    ++new_tokens;
    s.job->completion_tokens_ += 1;
    std::string reason;
    if (ends) {
      reason = "stop";
    } else {
      s.ids.push_back(next);
      ++s.generated;
      const size_t before = s.text.size();
      s.text += tok_.decode_piece(std::span<const int32_t>(s.ids));
      // A stop sequence ends the text before it; search only where a new match can be.
      size_t maxlen = 0;
      for (const auto& st : r.stop) maxlen = std::max(maxlen, st.size());
      const size_t from = before >= maxlen ? before - maxlen + 1 : 0;
      size_t cut = std::string::npos;
      for (const auto& st : r.stop) cut = std::min(cut, s.text.find(st, from));
      if (cut != std::string::npos) {
        s.text.resize(cut);
        reason = "stop";
      } else if (s.generated >= s.max_new || (int)s.ids.size() >= engine_.options().max_seq) {
        reason = "length";
      }
    }
    if (reason.empty()) {
      const size_t safe = s.text.size() - held_back(s.text, r.stop);
      std::string delta = safe > s.sent ? s.text.substr(s.sent, safe - s.sent) : "";
      s.sent = std::max(s.sent, safe);
      s.job->publish(s.choice, std::move(delta), r.logprobs ? &lp : nullptr, "");
    } else {
      s.job->publish(s.choice, s.sent < s.text.size() ? s.text.substr(s.sent) : "",
                     r.logprobs ? &lp : nullptr, reason);
      s.sent = std::string::npos;  // tells loop() to free the slot
    }
  }
  std::lock_guard lk(mu_);
  ++steps_;
  step_tokens_ += step_tokens;
  forward_seconds_ += std::chrono::duration<double>(now - start).count();
  step_seconds_ += std::chrono::duration<double>(Clock::now() - start).count();
  prompt_tokens_ += prompt_tokens;
  completion_tokens_ += new_tokens;
  const double t = std::chrono::duration<double>(now.time_since_epoch()).count();
  recent_.push_back({t, new_tokens});
  while (!recent_.empty() && recent_.front().first < t - 10) recent_.pop_front();
}

}  // namespace tandem::serve
