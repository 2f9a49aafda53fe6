// The JSON lines a run writes (metrics.jsonl, stages.jsonl, the test and eval results), in one
// place so the trainer, graft eval and graft bench write the same fields.
#include "engine/run_records.h"

namespace graft {

EpochMetrics metrics_from_json(const nlohmann::json& j) {
  EpochMetrics e;
  e.epoch = j.at("epoch"), e.loss = j.at("loss"), e.accuracy = j.at("accuracy");
  e.has_val = !j.at("val_loss").is_null();
  if (e.has_val) e.val_loss = j["val_loss"], e.val_accuracy = j["val_accuracy"];
  e.seconds = j.at("seconds");
  e.from_cache = j.value("from_cache", false);
  auto rate = [&](const char* k) { return j.contains(k) && j[k].is_number() ? double(j[k]) : 0.0; };
  e.images_per_second = rate("images_per_second");
  e.feature_rows_per_second = rate("feature_rows_per_second");
  return e;
}

std::string metrics_line(const EpochMetrics& em) {
  using J = nlohmann::ordered_json;
  return J{{"epoch", em.epoch},
           {"loss", em.loss},
           {"accuracy", em.accuracy},
           {"val_loss", em.has_val ? J(em.val_loss) : J()},
           {"val_accuracy", em.has_val ? J(em.val_accuracy) : J()},
           {"seconds", em.seconds},
           {"from_cache", em.from_cache},
           {"images_per_second", em.from_cache ? J() : J(em.images_per_second)},
           {"feature_rows_per_second", em.from_cache ? J(em.feature_rows_per_second) : J()}}
      .dump();
}

nlohmann::ordered_json stages_json(const EpochStages& e) {
  nlohmann::ordered_json j = {{"epoch", e.epoch},
                              {"images", e.images},
                              {"seconds", e.wall},
                              {"from_cache", e.from_cache},
                              {"decode_cpu_seconds", e.decode_cpu},
                              {"decode_threads", e.decode_threads},
                              {"wait_for_batch", e.wait_for_batch},
                              {"wait_for_slot", e.wait_for_slot},
                              {"h2d_copy", e.h2d_copy},
                              {"backbone", e.backbone},
                              {"head", e.head},
                              {"optimiser", e.optimiser},
                              {"device_idle_fraction", e.device_idle_fraction}};
  return j;
}

std::string eval_json(const std::string& split, const EvalResult& r,
                      const std::vector<std::string>& classes) {
  nlohmann::ordered_json j;
  j["split"] = split;
  j["loss"] = r.loss;
  j["accuracy"] = r.accuracy;
  nlohmann::ordered_json per = nlohmann::ordered_json::object();
  const int c = r.classes;
  for (int k = 0; k < c; ++k) {
    int64_t tp = r.confusion[size_t(k) * c + k], row = 0, col = 0;
    for (int o = 0; o < c; ++o) {
      row += r.confusion[size_t(k) * c + o];
      col += r.confusion[size_t(o) * c + k];
    }
    // Undefined metrics are null, not 0: a class absent from these images (support 0) has none
    // (0 would read as a failure on it), and one never predicted has no precision. A present
    // class never recognised has recall 0 and f1 0.
    using J = nlohmann::ordered_json;
    J precision, recall, f1;
    if (row > 0) {
      recall = double(tp) / double(row);
      if (col > 0) precision = double(tp) / double(col);
      const double p = col > 0 ? double(tp) / double(col) : 0.0, r = recall;
      f1 = p + r > 0 ? 2 * p * r / (p + r) : 0.0;
    }
    per[classes[k]] = {{"precision", precision}, {"recall", recall}, {"f1", f1}, {"support", row}};
  }
  j["per_class"] = per;
  nlohmann::ordered_json m = nlohmann::ordered_json::array();
  for (int k = 0; k < c; ++k)
    m.push_back(std::vector<int64_t>(r.confusion.begin() + size_t(k) * c,
                                     r.confusion.begin() + size_t(k + 1) * c));
  j["confusion"] = m;
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

}  // namespace graft
