// File-system helpers: whole-file reads and crash-safe writes (temp name, fsync, rename).
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace tandem {

std::string read_file(const std::string& path);  // throws Error naming the path
bool path_exists(const std::string& path);
void make_dirs(const std::string& path);

// Writes `data` to `path` so that a crash leaves either the old file or the new one, never a
// partial file: write to a temporary sibling, fsync, rename, fsync the directory.
void atomic_write_file(const std::string& path, std::string_view data);
// Same for a file made of several byte ranges, written in order in chunks of at most 4 MiB
// straight from the caller's memory; on_chunk, if set, sees every chunk before it is written
// (to hash the file while writing it).
void atomic_write_parts(const std::string& path, const std::vector<std::string_view>& parts,
                        const std::function<void(std::string_view)>& on_chunk = {});

void fsync_path(const std::string& path);  // file or directory

// Fault injection (tests and `TANDEM_FAULTS`): the next atomic_write_file of a path that starts
// with path_prefix fails as the OS would with errno `err`: ENOSPC after writing half the data,
// any other errno (EROFS, EIO) when creating the file. One shot; safe across threads.
void inject_write_fault(const std::string& path_prefix, int err);
void remove_all(const std::string& path);

}  // namespace tandem
