// Generates goldens.json: token ids (and decoded text) for every test tokenizer in this directory
// on golden_corpus.json, computed by an INDEPENDENT implementation of HF tokenizers: the JS port in
// the npm package @huggingface/transformers (transformers.js). The C++ test tokenizer_golden_test
// compares kvmesh's tokenizer against these ids.
//
// Regenerate (needs node >= 18 and npm; install outside the repo):
//   mkdir -p /tmp/tokgold && cd /tmp/tokgold && npm init -y && npm install @huggingface/transformers
//   TOKGOLD_DIR=/tmp/tokgold node tokenizer/testdata/gen_goldens.mjs
// It loads the package from $TOKGOLD_DIR (default /tmp/tokgold) and reads/writes the files next to
// itself (or in $KVMESH_TOKENIZER_TESTDATA). Re-run make_test_tokenizers.py first if the test
// tokenizers changed.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const dir = process.env.KVMESH_TOKENIZER_TESTDATA ||
    path.dirname(new URL(import.meta.url).pathname);
const require = createRequire(path.join(process.env.TOKGOLD_DIR || '/tmp/tokgold', 'package.json'));
const tjs = await import(require.resolve('@huggingface/transformers'));
const { PreTrainedTokenizer } = tjs;
const version = JSON.parse(fs.readFileSync(path.join(
    process.env.TOKGOLD_DIR || '/tmp/tokgold', 'node_modules/@huggingface/transformers/package.json'),
    'utf8')).version;

const corpus = JSON.parse(fs.readFileSync(path.join(dir, 'golden_corpus.json'), 'utf8'));
const files = ['llama3_bpe.json', 'gpt2_bpe.json', 'llama2_spm.json', 'mistral_metaspace.json',
               'metaspace_split_always.json', 'builtin_bpe_1024.json'];
const out = { generator: `@huggingface/transformers ${version}`, tokenizers: {} };
for (const file of files) {
  const tokenizerJson = JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8'));
  const tok = new PreTrainedTokenizer(tokenizerJson, {});
  out.tokenizers[file] = corpus.map((text) => {
    const ids = tok.encode(text, { add_special_tokens: false });
    const idsSpecial = tok.encode(text, { add_special_tokens: true });
    return {
      text,
      ids,
      ids_with_special: idsSpecial,
      decoded: tok.decode(ids, { skip_special_tokens: false, clean_up_tokenization_spaces: false }),
      decoded_skip_special: tok.decode(idsSpecial, { skip_special_tokens: true, clean_up_tokenization_spaces: false }),
    };
  });
}
fs.writeFileSync(path.join(dir, 'goldens.json'), JSON.stringify(out, null, 1) + '\n');
console.log(`wrote goldens.json for ${files.length} tokenizers x ${corpus.length} texts (${out.generator})`);
