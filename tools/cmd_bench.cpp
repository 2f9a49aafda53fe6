// graft bench --data DIR --backbone FILE: a training run instrumented stage by stage. Prints
// where each epoch's time went (decode, waiting, copy, backbone, head, optimiser), the device's
// idle fraction and the stage that limits throughput, and writes the same as JSON.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/run_records.h"
#include "engine/trainer.h"
#include "tools/commands.h"
#include "tools/setting_options.h"

namespace graft {

namespace {

// The stage that bounds the epoch: the loader when the loop waited for batches for more than a
// tenth of the time, else the busiest device stage.
std::string bottleneck(const EpochStages& e) {
  if (e.from_cache) return "head (features from the cache)";
  if (e.wall > 0 && e.wait_for_batch > 0.1 * e.wall) return "decode";
  const double device[] = {e.h2d_copy, e.backbone, e.head, e.optimiser};
  const char* names[] = {"h2d_copy", "backbone", "head", "optimiser"};
  int best = 0;
  for (int i = 1; i < 4; ++i)
    if (device[i] > device[best]) best = i;
  return names[best];
}

}  // namespace

Command add_bench_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "bench", "Train with per-stage timing: decode, copy, backbone, head, optimiser, idle time");
  struct Args {
    TrainConfig cfg;
    std::string json;
  };
  auto a = std::make_shared<Args>();
  a->cfg.epochs = 2;
  a->cfg.cache = "off";
  a->cfg.progress = false;
  add_setting_options(cmd, a->cfg,
                      {"--data", "--backbone", "--out", "--overwrite", "--epochs", "--batch-size",
                       "--cache-features", "--device", "--fine-tune", "--backbone-lr"});
  cmd->get_option("--data")->required();
  cmd->get_option("--backbone")->required();
  cmd->get_option("--out")->description("run folder (default: a temporary one)");
  cmd->add_option("--json", a->json, "write the table as JSON here (default RUN_DIR/bench.json)");
  return [a] {
    TrainConfig cfg = a->cfg;
    if (cfg.out_dir.empty()) {  // its own scratch folder: each bench replaces the last one's
      cfg.out_dir = (std::filesystem::temp_directory_path() / "graft-bench").string();
      cfg.overwrite = true;
    }
    TrainResult r = train(cfg);
    std::printf("\n%-6s %8s %9s %9s %9s %9s %9s %9s %9s %7s  %s\n", "epoch", "images", "img/s",
                "decode*", "wait", "h2d", "backbone", "head", "optim", "idle", "bottleneck");
    nlohmann::ordered_json rows = nlohmann::ordered_json::array();
    for (const EpochStages& e : r.stages) {
      const double ips = e.wall > 0 ? e.images / e.wall : 0;
      std::printf("%-6d %8lld %9.1f %8.2fs %8.2fs %8.3fs %8.2fs %8.3fs %8.3fs %6.1f%%  %s\n",
                  e.epoch, static_cast<long long>(e.images), ips, e.decode_cpu, e.wait_for_batch,
                  e.h2d_copy, e.backbone, e.head, e.optimiser, 100 * e.device_idle_fraction,
                  bottleneck(e).c_str());
      nlohmann::ordered_json row = stages_json(e);
      row["images_per_second"] = ips;
      row["decode_images_per_second_per_thread"] = e.decode_cpu > 0 ? e.images / e.decode_cpu : 0.0;
      row["bottleneck"] = bottleneck(e);
      rows.push_back(std::move(row));
    }
    std::printf(
        "* decode: CPU seconds summed over the decode threads (they run beside the device)\n");
    const std::string path = a->json.empty() ? cfg.out_dir + "/bench.json" : a->json;
    nlohmann::ordered_json j = {{"data", cfg.data},
                                {"backbone", cfg.backbone},
                                {"batch_size", cfg.batch_size},
                                {"cache", cfg.cache},
                                {"epochs", rows}};
    std::ofstream(path) << j.dump(1) << "\n";
    std::printf("bench: %s\n", path.c_str());
    return 0;
  };
}

}  // namespace graft
