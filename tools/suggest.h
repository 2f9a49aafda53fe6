#pragma once
// "Did you mean ...?" for mistyped commands and options.
#include <string>
#include <vector>

namespace graft {

// Edit distance (insertions, deletions, substitutions, and swaps of neighbours, each costing 1).
int edit_distance(const std::string& a, const std::string& b);

// The candidate nearest to `word` when it is close enough to be a plausible typo (distance at most
// 1 for short words, 2 from 5 characters, 3 from 9), else "". Ties go to the first candidate.
std::string closest_match(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace graft
