//! `tandem fl`: a device in federated rounds with a tandem-cloud peer.

use crate::{ConnectArgs, client_config, open_link};
use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;
use tandem_runtime::data::fashion_mnist::{CLASSES, FashionMnist, load_split};
use tandem_runtime::data::partition::{ClientSlice, Partition};
use tandem_runtime::data::rotten_tomatoes::{self, RottenTomatoes};
use tandem_runtime::fl::byzantine::Attack;
use tandem_runtime::fl::client::FlClient;
use tandem_runtime::fl::fmnist::Fmnist;
use tandem_runtime::fl::sentiment::{self, Reviews, Sentiment};
use tandem_runtime::fl::task::Task;
use tandem_runtime::model::ComputeBackend;
use tandem_runtime::session::fl::RoundClient;
use tandem_runtime::transport::TransportError;
use tandem_runtime::transport::link::LinkError;
use tandem_runtime::wire::{Capabilities, Join};

/// The federated tasks.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum TaskName {
    /// LeNet-5 on Fashion-MNIST.
    Fmnist,
    /// MiniLM's LoRA adapters (rank 8) and a head on Rotten Tomatoes reviews.
    Sentiment,
}

#[derive(Args)]
pub(crate) struct FlArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// The task (the cloud must run the same).
    #[arg(long, value_enum, default_value_t = TaskName::Fmnist)]
    task: TaskName,
    /// This board's own data: for fmnist a directory with train-images-idx3-ubyte[.gz]
    /// and train-labels-idx1-ubyte[.gz]; for sentiment a corpus in Rotten Tomatoes' CSV
    /// (its training movies' reviews). Without it, --client takes a slice of the cached
    /// data set.
    #[arg(long, value_name = "PATH")]
    data: Option<PathBuf>,
    /// Which slice of the cached data set this device holds: I/N (client I of N; for
    /// sentiment the training movies I, I + N, I + 2N, .. in name order).
    #[arg(long, value_name = "I/N", required_unless_present = "data")]
    client: Option<ClientSlice>,
    /// How the cached data set is split among the N clients (fmnist): iid, shards:K or
    /// dirichlet:ALPHA (every device of a run must use the same, with the same --seed).
    #[arg(long, default_value = "iid")]
    partition: Partition,
    /// Seed of the partition and of the local batch order.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Stop after taking part in this many rounds [default: until stopped].
    #[arg(long)]
    rounds: Option<u64>,
    /// CPU backend.
    #[arg(long, value_enum, default_value_t)]
    backend: ComputeBackend,
    /// Every trained round (its update and the codec state) is committed here before it
    /// is sent; a restarted device continues from it [default:
    /// $TANDEM_CACHE/checkpoints/fl-NODE.bin].
    #[arg(long, value_name = "FILE")]
    checkpoint: Option<PathBuf>,
    /// A test mode, to exercise a cloud's defences (point it only at a cloud you run):
    /// train honestly, then send every update corrupted: sign-flip[:X], scale:X or
    /// noise[:S].
    #[arg(long, value_name = "ATTACK")]
    byzantine: Option<Attack>,
    /// With --byzantine: the example count this device claims (its FedAvg weight)
    /// [default: what it holds].
    #[arg(long, requires = "byzantine", value_parser = clap::value_parser!(u64).range(1..))]
    byzantine_examples: Option<u64>,
}

pub(crate) fn run(args: FlArgs) -> Result<()> {
    match args.task {
        TaskName::Fmnist => {
            let data = match (&args.data, args.client) {
                (Some(dir), _) => load_split(dir, "train")?,
                (None, Some(slice)) => {
                    let set = FashionMnist::load(&FashionMnist::default_dir())?;
                    let parts =
                        args.partition
                            .assign(&set.train.labels, CLASSES, slice.of, args.seed)?;
                    set.train.select(&parts[slice.index])
                }
                (None, None) => bail!("pass --client I/N or --data DIR"),
            };
            let task = Fmnist::new(args.backend);
            participate(&args, task, data)
        }
        TaskName::Sentiment => {
            let (task, tokenizer) = Sentiment::load_cached(args.backend, sentiment::NETWORK_RANK)?;
            let data = match (&args.data, args.client) {
                (Some(path), _) => {
                    Reviews::tokenize(&tokenizer, &RottenTomatoes::load(path)?.train)?
                }
                (None, Some(slice)) => {
                    let corpus = RottenTomatoes::load(&rotten_tomatoes::default_path())?;
                    let mine = sentiment::movies_of(&corpus.train, slice.index, slice.of);
                    Reviews::tokenize(&tokenizer, mine)?
                }
                (None, None) => bail!("pass --client I/N or --data FILE"),
            };
            participate(&args, task, data)
        }
    }
}

/// Joins the cloud and takes part in rounds of `task` on `data`.
fn participate<T: Task + 'static>(args: &FlArgs, task: T, data: T::Data) -> Result<()> {
    if task.examples(&data) == 0 {
        bail!("this device holds no examples (try another --partition or --client)");
    }
    let (node, config) = client_config(&args.connect)?;
    let name = task.name();
    let checkpoint = args.checkpoint.clone().unwrap_or_else(|| {
        tandem_runtime::paths::cache_dir()
            .join("checkpoints")
            .join(format!("fl-{node}.bin"))
    });
    let mut client =
        FlClient::new(task, data, node.clone(), args.seed).with_checkpoint(checkpoint.clone())?;
    if let Some(attack) = args.byzantine {
        eprintln!(
            "fl: hostile test mode: every update {attack}, claiming {} examples",
            args.byzantine_examples
                .map_or_else(|| "its own".to_string(), |n| n.to_string())
        );
        client = client.with_attack(attack, args.byzantine_examples);
    }
    if let Some(round) = client.last_round() {
        eprintln!(
            "fl: resuming after round {round} ({})",
            checkpoint.display()
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let (endpoint, mut link) = open_link(
            &args.connect,
            node.clone(),
            config,
            Capabilities::FL,
            |hello| hello.model.name = name.try_into().unwrap_or_default(),
            "federated learning",
        )
        .await?;
        eprintln!(
            "fl: task {name}, {} examples, {} parameters; waiting for rounds",
            client.examples(),
            client.task().layout().len()
        );
        link.join(Join {
            node: node.clone(),
            num_examples: client.examples(),
            capabilities: Capabilities::FL,
        })
        .await?;
        let mut machine = RoundClient::new(Duration::from_secs(2));
        let mut taken = 0u64;
        while args.rounds.is_none_or(|r| taken < r) {
            let result = link
                .run_round(&mut machine, |round, model| {
                    let started = std::time::Instant::now();
                    let again = client.trained_on(round, model);
                    match client.train(round, model) {
                        Ok(trained) if again => {
                            eprintln!(
                                "round {}: asked again; sending the update already trained on this model ({} bytes)",
                                round.round,
                                trained.payload.len()
                            );
                            Some((trained.update, trained.payload))
                        }
                        Ok(trained) => {
                            // `bench fl-quic` reads the seconds: keep "in S s".
                            eprintln!(
                                "round {}: trained {} steps in {:.3} s, loss {:.3}, sending {} bytes",
                                round.round,
                                trained.steps,
                                started.elapsed().as_secs_f64(),
                                trained.loss,
                                trained.payload.len()
                            );
                            Some((trained.update, trained.payload))
                        }
                        Err(err) => {
                            eprintln!("round {}: no update sent: {err}", round.round);
                            None
                        }
                    }
                })
                .await;
            let result = match result {
                Ok(result) => result,
                // The cloud's run is over: this device's work is done.
                Err(LinkError::Refused(TransportError::Finished(line))) => {
                    println!("fl: {line}; took part in {taken} rounds");
                    break;
                }
                Err(err) => return Err(err.into()),
            };
            match result {
                Some(r) => eprintln!(
                    "round {}: {} ({} accepted, {} refused)",
                    r.round,
                    if r.committed { "committed" } else { "aborted" },
                    r.accepted,
                    r.rejected
                ),
                None => eprintln!("a round passed its deadline without a result"),
            }
            taken += 1;
        }
        link.close();
        endpoint.wait_idle().await;
        Ok::<_, anyhow::Error>(())
    })
}
