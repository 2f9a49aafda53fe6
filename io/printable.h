#pragma once
// Names and paths go into one-line messages; a control byte in a file name (a name may legally
// contain "\n") must not split the line, and a huge name must not flood the terminal.
#include <cstddef>
#include <string>
#include <string_view>

namespace graft {

// s with control bytes as \xNN, cut to max_len characters ("..." appended when cut).
std::string printable(std::string_view s, size_t max_len = 4096);

}  // namespace graft
