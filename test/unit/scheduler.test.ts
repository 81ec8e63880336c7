import { describe, expect, it } from 'vitest';
import path from 'node:path';
import { openSafetensorsSync } from '../../runtime/io/safetensors.ts';
import { fluxSchedule, calculateShift, linspace, transformerTimestep, eulerStep, loadSchedulerConfig } from '../../runtime/scheduler.ts';

const FIX = path.resolve(import.meta.dirname, '../fixtures/tiny-flux-reference');
const CFG = loadSchedulerConfig(path.resolve(import.meta.dirname, '../../models/tiny-flux/scheduler/scheduler_config.json'));

const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));

// numpy 2.4 float32, computed exactly as diffusers' FlowMatchEulerDiscreteScheduler.set_timesteps does
// (np.linspace -> astype(float32) -> math.exp(mu) / (math.exp(mu) + (1 / t - 1) ** 1.0); timesteps = sigmas * 1000)
const NUMPY: { steps: number; seq: number; sigmas: number[]; timesteps: number[] }[] = [
  {
    steps: 50,
    seq: 16,
    sigmas: [1065353216, 1065139687, 1064922964, 1064702978, 1064479652, 1064252908, 1064022671, 1063788858, 1063551383, 1063310161, 1063065103, 1062816116, 1062563105, 1062305972, 1062044615, 1061778928, 1061508806, 1061234133, 1060954795, 1060670671, 1060381639, 1060087567, 1059788328, 1059483780, 1059173780, 1058858184, 1058536835, 1058209578, 1057876244, 1057536668, 1057190668, 1056711516, 1055992711, 1055259913, 1054512712, 1053750678, 1052973366, 1052180310, 1051371029, 1050545019, 1049701756, 1048840693, 1047346519, 1045549728, 1043713769, 1041837350, 1039650840, 1035727916, 1031632385, 1023422715, 0],
    timesteps: [1148846080, 1148637556, 1148425912, 1148211082, 1147992990, 1147771560, 1147546720, 1147318387, 1147086477, 1146850909, 1146611595, 1146368443, 1146121362, 1145870256, 1145615024, 1145355564, 1145091773, 1144823538, 1144550747, 1144273282, 1143991024, 1143703845, 1143411619, 1143114209, 1142811475, 1142503275, 1142189458, 1141869871, 1141544350, 1141212732, 1140874842, 1140210312, 1139508354, 1138792731, 1138063042, 1137318868, 1136559775, 1135785306, 1134994993, 1134188342, 1133364843, 1132523961, 1130868199, 1129113520, 1127320592, 1125488151, 1123156279, 1119325299, 1115129149, 1106927530],
  },
  {
    steps: 4,
    seq: 64,
    sigmas: [1065353216, 1062454594, 1058890496, 1051839450, 0],
    timesteps: [1148846080, 1146015394, 1142534830, 1135452435],
  },
  {
    steps: 50,
    seq: 4096,
    sigmas: [1065353216, 1065245498, 1065134753, 1065020852, 1064903656, 1064783022, 1064658797, 1064530817, 1064398908, 1064262889, 1064122563, 1063977722, 1063828145, 1063673596, 1063513824, 1063348558, 1063177510, 1063000372, 1062816811, 1062626473, 1062428975, 1062223905, 1062010820, 1061789241, 1061558647, 1061318479, 1061068126, 1060806931, 1060534167, 1060249053, 1059950730, 1059638256, 1059310603, 1058966635, 1058605103, 1058224626, 1057823676, 1057400554, 1056942130, 1055995408, 1054991599, 1053925379, 1052790739, 1051580876, 1050288054, 1048903438, 1046257779, 1043057445, 1039018190, 1031275409, 0],
    timesteps: [1148846080, 1148740887, 1148632737, 1148521506, 1148407057, 1148289250, 1148167936, 1148042956, 1147914139, 1147781308, 1147644270, 1147502824, 1147356753, 1147205826, 1147049799, 1146888406, 1146721367, 1146548381, 1146369122, 1146183245, 1145990376, 1145790112, 1145582021, 1145365636, 1145140446, 1144905907, 1144661422, 1144406349, 1144139977, 1143861546, 1143570215, 1143265064, 1142945091, 1142609184, 1142256126, 1141884566, 1141493014, 1141079809, 1140435521, 1139510988, 1138530705, 1137489475, 1136381428, 1135199921, 1133937400, 1132585236, 1129804976, 1126679650, 1122538457, 1114780540],
  },
];

describe('FlowMatchEulerDiscreteScheduler (FluxPipeline)', () => {
  it('mu for 16 image tokens is 0.459375 (as the references record)', () => {
    expect(calculateShift(16, CFG)).toBe(0.459375);
  });

  for (const k of [0, 1, 2]) {
    it(`sigmas/timesteps are bit-exact vs diffusers reference prompt${k} (N=28)`, () => {
      const f = openSafetensorsSync(path.join(FIX, `prompt${k}.safetensors`));
      const s = fluxSchedule(Number(f.metadata.num_inference_steps), 16, CFG);
      expect(s.mu).toBe(Number(f.metadata.mu));
      expect(bits(s.sigmas)).toEqual(bits(f.tensor('sigmas').data));
      expect(bits(s.timesteps)).toEqual(bits(f.tensor('timesteps').data));
      expect(transformerTimestep(s, 0)).toBe(f.tensor('transformer_timestep_step0').data[0]);
    });
  }

  for (const c of NUMPY) {
    it(`bit-exact vs numpy float32 for N=${c.steps}, ${c.seq} image tokens`, () => {
      const s = fluxSchedule(c.steps, c.seq, CFG);
      expect(bits(s.sigmas)).toEqual(c.sigmas);
      expect(bits(s.timesteps)).toEqual(c.timesteps);
    });
  }

  it('linspace matches numpy (endpoint exact, N=1)', () => {
    const y = linspace(1, 1 / 28, 28);
    expect(y[0]).toBe(1);
    expect(y[27]).toBe(1 / 28);
    expect(Array.from(linspace(1, 1, 1))).toEqual([1]);
    expect(Array.from(fluxSchedule(1, 16, CFG).sigmas)).toEqual([1, 0]);
  });

  it('rejects steps < 1 and non-integers', () => {
    expect(() => fluxSchedule(0, 16, CFG)).toThrow(/integer >= 1/);
    expect(() => fluxSchedule(2.5, 16, CFG)).toThrow(/integer >= 1/);
  });

  it('Euler step reproduces latents_after_step0 bit-exactly', () => {
    const f = openSafetensorsSync(path.join(FIX, 'prompt0.safetensors'));
    const s = fluxSchedule(28, 16, CFG);
    const x = Float32Array.from(f.tensor('noise_latents').data);
    eulerStep(x, f.tensor('transformer_out_step0').data, s, 0);
    expect(bits(x)).toEqual(bits(f.tensor('latents_after_step0').data));
  });

  it('the full Euler loop over the reference velocities reproduces final_latents bit-exactly', () => {
    for (const k of [0, 1, 2]) {
      const f = openSafetensorsSync(path.join(FIX, `prompt${k}.safetensors`));
      const s = fluxSchedule(28, 16, CFG);
      const x = Float32Array.from(f.tensor('noise_latents').data);
      const all = f.tensor('transformer_out_all_steps').data;
      for (let i = 0; i < 28; i++) eulerStep(x, all.subarray(i * 256, (i + 1) * 256), s, i);
      expect(bits(x)).toEqual(bits(f.tensor('final_latents').data));
    }
  });
});
