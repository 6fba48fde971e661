//! llama.cpp's own quantizers as the rival, run by its own tools: `llama-quantize` (K- and
//! I-quant types, `--allow-requantize`, an importance matrix from `llama-imatrix` on the
//! calibration text) and `llama-perplexity` scoring every GGUF — llama.cpp's and nwc's exports
//! alike — on the same evaluation text.
//!
//! The tools are found (`NWC_LLAMACPP_BIN`, a directory holding the three) or built once into
//! `target/llama.cpp` from the PyPI source distribution of `llama-cpp-python` (its
//! `vendor/llama.cpp`), with CMake and Ninja from PyPI: about 10 minutes on 2 cores, then cached.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The llama-cpp-python release whose `vendor/llama.cpp` is built.
pub const LLAMA_CPP_PYTHON: &str = "0.3.36";

/// The three tools this bench runs.
const TOOLS: [&str; 3] = ["llama-quantize", "llama-imatrix", "llama-perplexity"];

/// llama.cpp's tools, found or built.
#[derive(Debug, Clone)]
pub struct LlamaCpp {
    bin: PathBuf,
    threads: usize,
}

fn run(cmd: &mut Command, what: &str) -> Result<String> {
    tracing::info!(?cmd, "{what}");
    let out = cmd
        .output()
        .with_context(|| format!("{what}: cannot start {:?}", cmd.get_program()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        bail!(
            "{what} failed ({}):\n{}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(text)
}

impl LlamaCpp {
    /// The tools in `NWC_LLAMACPP_BIN`, or in `cache/build/bin`, built there first if missing.
    ///
    /// # Errors
    /// When a tool is missing from `NWC_LLAMACPP_BIN`, or the download or build fails.
    pub fn find_or_build(cache: &Path) -> Result<Self> {
        let threads = std::thread::available_parallelism().map_or(2, usize::from);
        let have = |dir: &Path| TOOLS.iter().all(|t| dir.join(t).is_file());
        if let Some(dir) = std::env::var_os("NWC_LLAMACPP_BIN").map(PathBuf::from) {
            if !have(&dir) {
                bail!("NWC_LLAMACPP_BIN={} lacks one of {TOOLS:?}", dir.display());
            }
            return Ok(Self { bin: dir, threads });
        }
        let src = cache.join(format!(
            "llama_cpp_python-{LLAMA_CPP_PYTHON}/vendor/llama.cpp"
        ));
        let bin = src.join("build/bin");
        if have(&bin) {
            return Ok(Self { bin, threads });
        }
        std::fs::create_dir_all(cache)?;
        if !src.join("CMakeLists.txt").is_file() {
            println!(
                "llama.cpp: downloading llama-cpp-python {LLAMA_CPP_PYTHON} (source) from PyPI"
            );
            // The sdist's address from PyPI's JSON API (relative links resolved against it). The
            // project's document, not the version's: the per-version one answers 404 behind
            // some mirrors.
            let script = format!(
                "import json, urllib.request, urllib.parse, sys\n\
                 base = 'https://pypi.org/pypi/llama-cpp-python/json'\n\
                 d = json.load(urllib.request.urlopen(base))\n\
                 u = [u for u in d['releases']['{LLAMA_CPP_PYTHON}'] if u['packagetype'] == 'sdist'][0]\n\
                 urllib.request.urlretrieve(urllib.parse.urljoin(base, u['url']), sys.argv[1])\n"
            );
            let tarball = cache.join("llama-cpp-python.tar.gz");
            run(
                Command::new("python3").arg("-c").arg(&script).arg(&tarball),
                "downloading the llama-cpp-python sdist",
            )?;
            run(
                Command::new("tar")
                    .arg("xzf")
                    .arg(&tarball)
                    .arg("-C")
                    .arg(cache),
                "unpacking the llama-cpp-python sdist",
            )?;
        }
        run(
            Command::new("python3").args(["-m", "pip", "install", "--quiet", "cmake", "ninja"]),
            "installing cmake and ninja from PyPI",
        )?;
        println!("llama.cpp: building {TOOLS:?} (about 10 min on 2 cores; cached afterwards)");
        run(
            Command::new("cmake").current_dir(&src).args([
                "-B",
                "build",
                "-G",
                "Ninja",
                "-DCMAKE_BUILD_TYPE=Release",
                "-DLLAMA_CURL=OFF",
                "-DGGML_NATIVE=ON",
                "-DLLAMA_BUILD_TESTS=OFF",
                "-DLLAMA_BUILD_SERVER=OFF",
                "-DBUILD_SHARED_LIBS=OFF",
                // `-march=native` turns on AMX on Sapphire Rapids, and ggml's AMX matrix
                // product dies with SIGSEGV where the kernel has not granted the tile state
                // (seen in containers here); everything else native stays.
                "-DCMAKE_C_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16",
                "-DCMAKE_CXX_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16",
            ]),
            "configuring llama.cpp",
        )?;
        let mut build = Command::new("cmake");
        build
            .current_dir(&src)
            .args(["--build", "build", "-j", &threads.to_string(), "--target"])
            .args(TOOLS);
        run(&mut build, "building llama.cpp")?;
        if !have(&bin) {
            bail!(
                "llama.cpp built, but {TOOLS:?} are not all in {}",
                bin.display()
            );
        }
        Ok(Self { bin, threads })
    }

    fn tool(&self, name: &str) -> Command {
        let mut c = Command::new(self.bin.join(name));
        c.env("LLAMA_LOG_COLORS", "0");
        c
    }

    /// An importance matrix of `model` from `chunks` windows of `ctx` tokens of `text`.
    ///
    /// # Errors
    /// When `llama-imatrix` fails.
    pub fn imatrix(
        &self,
        model: &Path,
        text: &Path,
        ctx: usize,
        chunks: usize,
        out: &Path,
    ) -> Result<()> {
        let mut c = self.tool("llama-imatrix");
        c.arg("-m")
            .arg(model)
            .arg("-f")
            .arg(text)
            .arg("-o")
            .arg(out)
            .args(["-c", &ctx.to_string(), "--chunks", &chunks.to_string()])
            .args(["-t", &self.threads.to_string(), "--no-ppl"]);
        run(&mut c, "llama-imatrix").map(drop)
    }

    /// `model` quantized to llama.cpp type `ty` (`Q4_K_M`, `IQ3_XXS`, …), with an importance
    /// matrix when one is given.
    ///
    /// # Errors
    /// When `llama-quantize` fails.
    pub fn quantize(
        &self,
        model: &Path,
        imatrix: Option<&Path>,
        ty: &str,
        out: &Path,
    ) -> Result<()> {
        let mut c = self.tool("llama-quantize");
        c.arg("--allow-requantize");
        if let Some(m) = imatrix {
            c.arg("--imatrix").arg(m);
        }
        c.arg(model).arg(out).arg(ty).arg(self.threads.to_string());
        run(&mut c, "llama-quantize").map(drop)
    }

    /// `llama-perplexity`'s final estimate on the first `chunks` windows of `ctx` tokens of
    /// `text`.
    ///
    /// # Errors
    /// When `llama-perplexity` fails or prints no final estimate.
    pub fn perplexity(&self, model: &Path, text: &Path, ctx: usize, chunks: usize) -> Result<f64> {
        let mut c = self.tool("llama-perplexity");
        c.arg("-m")
            .arg(model)
            .arg("-f")
            .arg(text)
            .args(["-c", &ctx.to_string(), "--chunks", &chunks.to_string()])
            .args(["-t", &self.threads.to_string()]);
        let log = run(&mut c, "llama-perplexity")?;
        parse_final_ppl(&log).with_context(|| {
            format!(
                "llama-perplexity on {} printed no final estimate",
                model.display()
            )
        })
    }
}

/// The value of `Final estimate: PPL = X +/- Y` in a `llama-perplexity` log.
fn parse_final_ppl(log: &str) -> Option<f64> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("Final estimate: PPL ="))?;
    let rest = line.split("PPL =").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_final_estimate() {
        let log = "[1]12.3,[2]13.1,\nFinal estimate: PPL = 24.5678 +/- 0.91234\nllama_perf_context_print: …";
        assert_eq!(super::parse_final_ppl(log), Some(24.5678));
        assert_eq!(super::parse_final_ppl("no estimate here"), None);
    }
}
