// File-system helpers: whole-file reads and crash-safe writes (temp name, fsync, rename).
#pragma once

#include <string>
#include <string_view>

namespace tandem {

std::string read_file(const std::string& path);  // throws Error naming the path
bool path_exists(const std::string& path);
void make_dirs(const std::string& path);

// Writes `data` to `path` so that a crash leaves either the old file or the new one, never a
// partial file: write to a temporary sibling, fsync, rename, fsync the directory.
void atomic_write_file(const std::string& path, std::string_view data);

void fsync_path(const std::string& path);  // file or directory
void remove_all(const std::string& path);

}  // namespace tandem
