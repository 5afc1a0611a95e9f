using System.Security.Cryptography;
using System.Text.Json.Nodes;
using MimFlow.Core.IO;
using MimFlow.Models.Backbones;
using MimFlow.Models.Interop;
using MimFlow.Precompute.Tokenize;
using MimFlow.Tests.Precompute;
using MimFlow.Training.Pretraining;
using MimFlow.Training.Runs;
using Xunit.Abstractions;

namespace MimFlow.Tests.Fuzz;

/// <summary>
/// Damaged run checkpoints resumed by pretraining: training.safetensors (byte damage), state.json, latest.json and
/// checksums.json (JSON edits, byte damage). Damage checksums.json does not record is always refused, naming the file;
/// each damage of training.safetensors and state.json is also tried with the checksums brought up to date, so the
/// readers behind the checksum meet it. Every case resumes, or is refused naming the file; a damage of latest.json or
/// checksums.json that is not refused resumes exactly as the intact checkpoint does (same losses).
/// </summary>
public sealed class CheckpointFilesFuzzTests(ITestOutputHelper output)
{
    private static readonly Type[] Refusals = [typeof(InvalidDataException), typeof(IOException), typeof(InvalidOperationException)];

    private static void CopyTree(string from, string to)
    {
        if (Directory.Exists(to)) Directory.Delete(to, recursive: true);
        foreach (string file in Directory.EnumerateFiles(from, "*", SearchOption.AllDirectories))
        {
            string target = Path.Combine(to, Path.GetRelativePath(from, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
        }
    }

    /// <summary>checksums.json brought up to date with <paramref name="file"/> (relative, '/'-separated).</summary>
    private static void Record(string checkpoint, string file)
    {
        string path = Path.Combine(checkpoint, FolderChecksums.FileName);
        var record = JsonNode.Parse(File.ReadAllText(path))!;
        record["Files"]![file] = Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(Path.Combine(checkpoint, file))));
        File.WriteAllText(path, record.ToJsonString());
    }

    /// <summary>Step and loss of every line of a run's metrics (timings differ from run to run).</summary>
    private static List<string> Losses(string run) =>
        MetricsLog.Read(run).Select(line => $"{line["step"]}:{line["loss"]}").ToList();

    [Fact]
    public async Task Damaged_checkpoints_resume_or_are_refused_naming_the_file()
    {
        using var fixture = await TokenizeFixture.CreateAsync(images: 6);
        string shards = fixture.Combine("shards");
        await TokenizeJob.RunAsync(fixture.Request(shards) with { TeacherDirectory = null, StoreImageMaxSide = 32 });
        string student = fixture.Combine("student");
        var config = Architectures.Get("beit-tiny") with { ImgSize = 32, PatchSize = 8, EmbedDim = 16, Depth = 1, NumHeads = 2 };
        using (var model = ModelCatalog.Create(new ModelSpec("beit-test", Config: config), seed: 3))
            ModelDirectory.Save(student, new ModelSpec("beit-test", Config: config), model);
        var request = new PretrainRequest
        {
            Shards = shards, Objective = "beit", Model = student, OutputDirectory = fixture.Combine("pristine"), Steps = 1, BatchSize = 2, CheckpointEvery = 1, DecodeWorkers = 1,
        };
        await Pretrainer.RunAsync(request);
        string pristine = request.OutputDirectory;
        string checkpointName = Path.GetFileName(new CheckpointStore(pristine).Latest()!);
        string runFolder = fixture.Combine("case"), checkpoint = Path.Combine(runFolder, "checkpoints", checkpointName);
        var resume = request with { OutputDirectory = runFolder, Steps = 2, Resume = true };
        // What an intact resume gives: a damage that changes nothing the run reads must give exactly this.
        CopyTree(pristine, runFolder);
        await Pretrainer.RunAsync(resume);
        var expected = Losses(runFolder);
        var run = new FuzzRun("checkpoints", output);

        // A refusal names the damaged file, or (a state that reads well but belongs to another run: "resume it with the
        // same --seed") the checkpoint it stands for.
        void Resume(string label, string file, Action damage, bool mustRefuse, bool exact = false)
        {
            CopyTree(pristine, runFolder);
            damage();
            run.Case(label, () =>
            {
                Pretrainer.RunAsync(resume).GetAwaiter().GetResult();
                if (mustRefuse) throw new InvalidOperationException("resumed from a file its checksum does not match");
                if (exact && !Losses(runFolder).SequenceEqual(expected)) throw new InvalidOperationException("resumed, but not as the intact checkpoint resumes");
            }, file.EndsWith("state.json", StringComparison.Ordinal) ? [file, checkpoint] : [file], Refusals);
        }

        string training = Path.Combine(checkpoint, "training.safetensors");
        byte[] trainingBytes = File.ReadAllBytes(Path.Combine(pristine, "checkpoints", checkpointName, "training.safetensors"));
        int headerEnd = 8 + (int)BitConverter.ToUInt64(trainingBytes, 0);
        foreach (var fuzz in Mutations.Of(trainingBytes, 301, 12, [headerEnd - 40]))
        {
            Resume($"training.safetensors {fuzz.Label}", training, () => File.WriteAllBytes(training, fuzz.Bytes), mustRefuse: true);
            Resume($"recorded training.safetensors {fuzz.Label}", training, () =>
            {
                File.WriteAllBytes(training, fuzz.Bytes);
                Record(checkpoint, "training.safetensors");
            }, mustRefuse: false);
        }

        string state = Path.Combine(checkpoint, "state.json");
        string stateJson = File.ReadAllText(Path.Combine(pristine, "checkpoints", checkpointName, "state.json"));
        foreach (var fuzz in Mutations.OfJson(stateJson, 302, 18).Concat(Mutations.Of(System.Text.Encoding.UTF8.GetBytes(stateJson), 303, 4)))
        {
            Resume($"state.json {fuzz.Label}", state, () => File.WriteAllBytes(state, fuzz.Bytes), mustRefuse: true);
            Resume($"recorded state.json {fuzz.Label}", state, () =>
            {
                File.WriteAllBytes(state, fuzz.Bytes);
                Record(checkpoint, "state.json");
            }, mustRefuse: false);
        }

        string latest = Path.Combine(runFolder, CheckpointStore.LatestFileName);
        string latestJson = File.ReadAllText(Path.Combine(pristine, CheckpointStore.LatestFileName));
        foreach (var fuzz in Mutations.OfJson(latestJson, 304, 16).Concat(Mutations.Of(System.Text.Encoding.UTF8.GetBytes(latestJson), 305, 6)))
            Resume($"latest.json {fuzz.Label}", latest, () => File.WriteAllBytes(latest, fuzz.Bytes), mustRefuse: false, exact: true);

        string checksums = Path.Combine(checkpoint, FolderChecksums.FileName);
        string checksumsJson = File.ReadAllText(Path.Combine(pristine, "checkpoints", checkpointName, FolderChecksums.FileName));
        foreach (var fuzz in Mutations.OfJson(checksumsJson, 306, 16).Concat(Mutations.Of(System.Text.Encoding.UTF8.GetBytes(checksumsJson), 307, 6)))
            Resume($"checksums.json {fuzz.Label}", checksums, () => File.WriteAllBytes(checksums, fuzz.Bytes), mustRefuse: false, exact: true);
        run.Finish();
    }
}
