// Checkpoint writing, verification and discovery.
#include "tandem/ckpt/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>

#include "tandem/core/error.h"
#include "tandem/core/fs.h"
#include "tandem/core/hash.h"
#include "tandem/io/safetensors.h"

namespace fs = std::filesystem;

namespace tandem {

namespace {
void add_views(StateFile& f, const ParamLayout& layout, const float* base,
               const std::string& prefix) {
  for (const auto& t : layout.tensors)
    f.tensors.push_back({prefix + t.name, "F32", t.shape,
                         std::string_view(reinterpret_cast<const char*>(base + t.offset),
                                          t.numel * sizeof(float))});
}
}  // namespace

std::vector<std::string_view> StateFile::parts() const {
  std::vector<std::string_view> out{header};
  for (const auto& t : tensors) out.push_back(t.data);
  return out;
}

StateFile model_file(const ParamLayout& layout, const float* params) {
  StateFile f;
  add_views(f, layout, params, "");
  f.header = safetensors_header(f.tensors, {{"format", "pt"}});
  return f;
}

StateFile optimizer_file(const ParamLayout& layout, const float* m, const float* v) {
  StateFile f;
  add_views(f, layout, m, "exp_avg.");
  add_views(f, layout, v, "exp_avg_sq.");
  f.header = safetensors_header(f.tensors, {});
  return f;
}

std::string checkpoint_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%08lld", (long long)step);
  return buf;
}

namespace {

void fill_from(const StFile& f, const ParamLayout& layout, const std::string& prefix,
               std::vector<float>& out, const std::string& what) {
  out.assign(layout.total, 0.f);
  for (const auto& t : layout.tensors) {
    const StTensor* s = f.find(prefix + t.name);
    if (!s) fail("[checkpoint] " + what + ": missing tensor '" + prefix + t.name + "'");
    if (s->dtype != "F32" || s->shape != t.shape)
      fail("[checkpoint] " + what + ": tensor '" + prefix + t.name +
           "' has the wrong dtype or shape for this model");
    std::memcpy(out.data() + t.offset, s->data.data(), t.numel * sizeof(float));
  }
}

bool is_step_dir(const std::string& name) {
  if (name.size() != 13 || name.rfind("step-", 0) != 0) return false;
  return std::all_of(name.begin() + 5, name.end(), [](char c) { return c >= '0' && c <= '9'; });
}

}  // namespace

std::string save_checkpoint(const std::string& run_dir, const CheckpointState& state,
                            const ParamLayout& layout, const float* params, const float* m,
                            const float* v, const std::string& tokenizer_path,
                            const std::function<void(const std::string&)>& after_file) {
  make_dirs(run_dir);
  const std::string final_dir = run_dir + "/" + checkpoint_name(state.step);
  const std::string tmp = final_dir + ".tmp-" + std::to_string(::getpid());
  remove_all(tmp);
  make_dirs(tmp);
  nlohmann::ordered_json files = nlohmann::ordered_json::object();
  auto put = [&](const std::string& name, const std::vector<std::string_view>& parts) {
    Sha256 h;
    atomic_write_parts(tmp + "/" + name, parts,
                       [&](std::string_view c) { h.update(c.data(), c.size()); });
    files[name] = h.hex();
    if (after_file) after_file(name);
  };
  try {
    put("model.safetensors", model_file(layout, params).parts());
    nlohmann::json extra = state.extra;
    if (m && v) {
      put("optimizer.safetensors", optimizer_file(layout, m, v).parts());
      extra["fingerprint"] = {{"params", files["model.safetensors"]},
                              {"optimizer", files["optimizer.safetensors"]}};
    }
    if (!tokenizer_path.empty()) {
      const std::string tok = read_file(tokenizer_path);
      put("tokenizer.model", {tok});
    }
    nlohmann::ordered_json man;
    man["format_version"] = kCheckpointFormat;
    man["step"] = state.step;
    man["config"] = state.config_text;
    man["tokenizer_sha256"] = state.tokenizer_sha256;
    if (!state.chat_template.empty()) man["chat_template"] = state.chat_template;
    man["rng"] = {{"seed", state.seed}, {"kind", "counter"}};
    man["data"] = {{"samples_consumed", state.samples_consumed}};
    man["extra"] = extra;
    man["files"] = files;
    atomic_write_file(tmp + "/manifest.json", man.dump(2) + "\n");
    fsync_path(tmp);
    // An earlier checkpoint of this step (one that failed to verify): keep it aside.
    if (path_exists(final_dir)) set_aside(final_dir);
    fs::rename(tmp, final_dir);
    fsync_path(run_dir);
  } catch (const fs::filesystem_error& e) {
    remove_all(tmp);
    fail("[checkpoint] cannot write " + final_dir + ": " + e.what());
  } catch (...) {
    remove_all(tmp);
    throw;
  }
  return final_dir;
}

nlohmann::json read_manifest(const std::string& dir, bool verify_files) {
  const std::string path = dir + "/manifest.json";
  if (!path_exists(path))
    fail("[checkpoint] " + dir + ": no manifest.json (incomplete checkpoint)");
  nlohmann::json man;
  try {
    man = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    fail("[checkpoint] " + path + ": not valid JSON: " + e.what());
  }
  // Every field is checked for presence and type here, so later reads cannot throw.
  auto field = [&](const char* key, bool ok) {
    if (!man.contains(key) || !ok)
      fail("[checkpoint] " + path + ": field '" + key + "' is missing or has the wrong type");
  };
  if (!man.is_object()) fail("[checkpoint] " + path + ": not a JSON object");
  field("format_version",
        man.contains("format_version") && man["format_version"].is_number_integer());
  if (man["format_version"] != kCheckpointFormat)
    fail("[checkpoint] " + path + ": unsupported format_version " + man["format_version"].dump());
  field("step", man.contains("step") && man["step"].is_number_integer() && man["step"] >= 0);
  field("config", man.contains("config") && man["config"].is_string());
  field("tokenizer_sha256",
        man.contains("tokenizer_sha256") && man["tokenizer_sha256"].is_string());
  field("rng", man.contains("rng") && man["rng"].is_object() && man["rng"].contains("seed") &&
                   man["rng"]["seed"].is_number_unsigned());
  field("data", man.contains("data") && man["data"].is_object() &&
                    man["data"].contains("samples_consumed") &&
                    man["data"]["samples_consumed"].is_number_integer());
  field("extra", man.contains("extra") && man["extra"].is_object());
  field("files", man.contains("files") && man["files"].is_object() &&
                     man["files"].contains("model.safetensors"));
  for (auto it = man["files"].begin(); it != man["files"].end(); ++it) {
    if (!it.value().is_string() || it.key().find('/') != std::string::npos)
      fail("[checkpoint] " + path + ": malformed entry '" + it.key() + "' in 'files'");
    std::string f = dir + "/" + it.key();
    if (!path_exists(f)) fail("[checkpoint] " + f + ": file listed in the manifest is missing");
    if (verify_files && sha256_file(f) != it.value().get<std::string>())
      fail("[checkpoint] " + f + ": checksum mismatch (corrupt or truncated)");
  }
  return man;
}

CheckpointData load_checkpoint(const std::string& dir, const ParamLayout& layout,
                               bool with_optimizer) {
  nlohmann::json man = read_manifest(dir);
  CheckpointData d;
  d.dir = dir;
  d.state.step = man["step"].get<int64_t>();
  d.state.config_text = man["config"].get<std::string>();
  d.state.tokenizer_sha256 = man["tokenizer_sha256"].get<std::string>();
  if (man.contains("chat_template") && man["chat_template"].is_string())
    d.state.chat_template = man["chat_template"].get<std::string>();
  d.state.seed = man["rng"]["seed"].get<uint64_t>();
  d.state.samples_consumed = man["data"]["samples_consumed"].get<int64_t>();
  d.state.extra = man["extra"];
  fill_from(safetensors_load(dir + "/model.safetensors"), layout, "", d.params,
            dir + "/model.safetensors");
  if (with_optimizer) {
    if (!man["files"].contains("optimizer.safetensors"))
      fail("[checkpoint] " + dir + ": has no optimizer state to resume from");
    StFile opt = safetensors_load(dir + "/optimizer.safetensors");
    fill_from(opt, layout, "exp_avg.", d.m, dir + "/optimizer.safetensors");
    fill_from(opt, layout, "exp_avg_sq.", d.v, dir + "/optimizer.safetensors");
  }
  return d;
}

std::optional<std::string> latest_checkpoint(const std::string& run_dir,
                                             std::vector<std::string>* rejected,
                                             std::vector<std::string>* rejected_dirs) {
  if (!path_exists(run_dir)) return std::nullopt;
  if (!fs::is_directory(run_dir)) fail("[checkpoint] '" + run_dir + "' is not a directory");
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(run_dir)) {
    std::string n = e.path().filename().string();
    if (e.is_directory() && is_step_dir(n)) names.push_back(n);
  }
  std::sort(names.rbegin(), names.rend());
  for (const auto& n : names) {
    std::string dir = run_dir + "/" + n;
    try {
      read_manifest(dir);
      return dir;
    } catch (const Error& e) {
      if (rejected) rejected->push_back(e.what());
      if (rejected_dirs) rejected_dirs->push_back(dir);
    }
  }
  return std::nullopt;
}

void remove_stale_temporaries(const std::string& run_dir) {
  if (!fs::is_directory(run_dir)) return;
  for (const auto& e : fs::directory_iterator(run_dir)) {
    std::string n = e.path().filename().string();
    if (e.is_directory() && n.size() > 13 && is_step_dir(n.substr(0, 13)) &&
        n.compare(13, 5, ".tmp-") == 0)
      remove_all(e.path().string());
  }
}

std::string set_aside(const std::string& dir) {
  std::string aside = dir + ".rejected-" + std::to_string(::time(nullptr));
  for (int i = 1; path_exists(aside); ++i)
    aside = dir + ".rejected-" + std::to_string(::time(nullptr)) + "-" + std::to_string(i);
  fs::rename(dir, aside);
  return aside;
}

void prune_checkpoints(const std::string& run_dir, int keep, int64_t keep_every) {
  if (keep <= 0 || !path_exists(run_dir)) return;
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(run_dir)) {
    std::string n = e.path().filename().string();
    if (e.is_directory() && is_step_dir(n) && path_exists(e.path().string() + "/manifest.json"))
      names.push_back(n);
  }
  std::sort(names.rbegin(), names.rend());
  for (size_t i = keep; i < names.size(); ++i) {
    const int64_t step = std::stoll(names[i].substr(5));
    if (keep_every > 0 && step % keep_every == 0) continue;
    remove_all(run_dir + "/" + names[i]);
  }
}

}  // namespace tandem
