import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { App, Validations } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { AwsSolutionsChecks } from 'cdk-nag';
import { BINARIES } from '../lib/functions';
import { MeterStack } from '../lib/meter-stack';
import { type EnvironmentSettings, validate } from '../lib/settings';

/** The temporary folders the tests made, removed when the test process ends. */
const made: string[] = [];
process.on('exit', () => {
  for (const dir of made) fs.rmSync(dir, { recursive: true, force: true });
});

/** A fresh temporary folder named `<prefix>…`, removed when the test process ends. */
export function tempDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  made.push(dir);
  return dir;
}

/** A folder with a tiny placeholder zip per binary: the template does not depend on the code. */
export function placeholderZips(): string {
  const dir = tempDir('meter-zips-');
  for (const binary of BINARIES) {
    fs.mkdirSync(path.join(dir, binary));
    // An empty zip archive: the end-of-central-directory record alone.
    fs.writeFileSync(path.join(dir, binary, 'bootstrap.zip'), Buffer.from([0x50, 0x4b, 0x05, 0x06, ...new Array(18).fill(0)]));
  }
  return dir;
}

export function settings(name: string, overrides: Record<string, unknown> = {}): EnvironmentSettings {
  return validate(name, overrides, `test ${name}`);
}

/** An app with cdk.json's context (feature flags), as `cdk synth` makes it. */
export function newApp(): App {
  const { context } = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'cdk.json'), 'utf8'));
  return new App({ context, outdir: tempDir('meter-cdk-out-') });
}

export interface Synthesized {
  readonly stack: MeterStack;
  readonly template: Template;
  /** cdk-nag's findings of severity error: `<rule> at <construct path>`. */
  readonly nagErrors: string[];
}

/** Synthesizes one environment as `cdk synth` does, cdk-nag included. */
export function synth(env: EnvironmentSettings): Synthesized {
  const app = newApp();
  const stack = new MeterStack(app, `meter-${env.name}`, {
    settings: env,
    lambdaDir: placeholderZips(),
    env: { region: 'eu-west-1' },
  });
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  let nagErrors: string[] = [];
  try {
    app.synth();
  } catch {
    // cdk-nag fails the synth on errors; the report says which.
  }
  const report = path.join(app.outdir, 'validation-report.json');
  if (fs.existsSync(report)) {
    const parsed = JSON.parse(fs.readFileSync(report, 'utf8'));
    nagErrors = parsed.pluginReports.flatMap((plugin: any) =>
      plugin.violations
        .filter((v: any) => v.severity === 'error')
        .flatMap((v: any) => v.violatingConstructs.map((c: any) => `${v.ruleName} at ${c.constructPath}`)),
    );
  }
  return { stack, template: Template.fromStack(stack), nagErrors };
}
