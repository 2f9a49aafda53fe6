#include "tools/suggest.h"

#include <algorithm>

namespace graft {

int edit_distance(const std::string& a, const std::string& b) {
  // Optimal string alignment distance over three rolling rows: two back for the swap case.
  const size_t n = b.size();
  std::vector<int> two(n + 1), one(n + 1), row(n + 1);
  for (size_t j = 0; j <= n; ++j) one[j] = int(j);
  for (size_t i = 1; i <= a.size(); ++i) {
    row[0] = int(i);
    for (size_t j = 1; j <= n; ++j) {
      const int cost = a[i - 1] == b[j - 1] ? 0 : 1;
      row[j] = std::min({one[j] + 1, row[j - 1] + 1, one[j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        row[j] = std::min(row[j], two[j - 2] + 1);
    }
    std::swap(two, one);
    std::swap(one, row);
  }
  return one[n];
}

std::string closest_match(const std::string& word, const std::vector<std::string>& candidates) {
  const int limit = word.size() >= 9 ? 3 : word.size() >= 5 ? 2 : 1;
  std::string best;
  int best_d = limit + 1;
  for (const std::string& c : candidates) {
    const int d = edit_distance(word, c);
    if (d < best_d) best_d = d, best = c;
  }
  return best;
}

}  // namespace graft
