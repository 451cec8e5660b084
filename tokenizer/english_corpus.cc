// The English text the built-in byte-level BPE tokenizer is trained on (see
// byte_level_bpe_builder.h). Original prose written for kvmesh; changing it changes every built-in
// tokenizer, so treat it as frozen (tests pin the output).
#include "tokenizer/byte_level_bpe_builder.h"

namespace kvmesh::tokenizer {

std::string_view EmbeddedEnglishCorpus() {
  return R"corpus(The morning was cold and clear, and the small town by the river was still asleep when the
first train came through. A few lights were on in the kitchen of the bakery, where the baker had been
working since four o'clock. She made bread the way her mother had made it: flour, water, salt and time.
There is no secret, she liked to say to anyone who asked. You only have to wait, and most people do not
want to wait for anything.

On the other side of the street, a man was opening the door of the hardware store. He had owned the
store for thirty years, and in that time he had seen the town change many times. The old mill had
closed, the new school had opened, and the bridge over the river had been rebuilt twice. Every morning
he swept the floor, counted the money in the register, and put the coffee on. Then he stood by the
window and watched the street come to life.

Children walked to school in groups, talking and laughing. A bus stopped at the corner and let out a
few workers who were going to the factory on the hill. The factory made parts for machines that made
other machines, and nobody in town was quite sure what the final product was. It was good work, people
said, and it paid well enough to raise a family.

Computers have changed the way we work and the way we think about work. A program is a list of
instructions that a computer follows, one step at a time. The instructions must be precise, because
the computer does exactly what it is told and nothing more. When a program has a mistake in it, we
call the mistake a bug, and the process of finding and fixing it is called debugging. Good programmers
write tests that check their programs automatically, so that they can change the code without fear of
breaking something that used to work.

A language model is a program that reads text and predicts what comes next. It does not read letters
one by one. Instead, the text is first split into tokens, which are short pieces of words. Common words
are often a single token, while rare words are split into several pieces. The model sees a sequence of
numbers, one number for each token, and it learns from a very large amount of text which numbers tend
to follow which. When it generates an answer, it produces one token at a time and feeds each new token
back into itself to produce the next one.

Serving a model to many users at once is an engineering problem of its own. Each request needs memory
for the keys and values of every token it has seen so far, and that memory is called the cache. When two
requests share the same beginning, for example the same system prompt, the cache for that beginning can
be computed once and reused. A router that knows which worker already holds which part of the cache can
send each request to the place where the least new work is needed. This saves time and money, and the
users get their answers sooner.

The weather in the mountains can change very quickly. In the morning the sky may be blue and the air
calm, and by the afternoon a storm can roll in from the west with wind, rain and even snow. Experienced
hikers always carry a warm jacket, a map, water and something to eat, even on a short walk. They tell
someone where they are going and when they expect to be back. If the weather turns bad, they are not
afraid to turn around. The mountain will still be there next week.

Cooking is one of the oldest human skills. To make a simple soup, you need an onion, a few carrots, some
potatoes, salt, pepper and water. Cut the vegetables into small pieces and cook the onion slowly in a
little oil until it is soft and sweet. Add the rest of the vegetables and enough water to cover them,
then let everything simmer for about thirty minutes. Taste the soup, add salt if it needs it, and serve
it hot with fresh bread. It is not a complicated dish, but on a cold evening it is hard to think of
anything better.

History is full of people who changed the world with an idea. Some of them were famous in their own
time, while others were forgotten until long after they had died. Many important discoveries were made
by accident, when someone noticed something strange and asked why it happened. The answer to a simple
question can lead to a new field of science, a new industry, or a new way of living. That is why it is
important to keep asking questions, even when everyone around you thinks the answer is obvious.

The library in the center of town was built more than a hundred years ago. It has tall windows, wooden
floors and long tables where students sit and read. The librarians know where every book is, and they
are always happy to help people find what they are looking for. On Saturday mornings there is a reading
hour for children, and the room fills with the sound of small voices asking what happens next. Every
good story, the librarian says, makes you want to know what happens next.

Numbers are everywhere in daily life. We count money, measure time, and keep track of the distance we
travel. A week has 7 days, a year has 12 months, and a day has 24 hours of 60 minutes each. In 2024 the
average price of a loaf of bread in the town was 3 dollars and 50 cents, and the train to the city took
45 minutes. People rarely think about how much they depend on numbers until something goes wrong, such
as a bill that is 10 times larger than expected.

What do you want to do today? I think we should go for a walk by the river, and then we can have lunch
at the small place near the bridge. They have the best soup in town. After that, if you are not too
tired, we could visit the museum. There is a new exhibition about the history of the railway, and I
have heard that it is very interesting. Let me know what you think, and I will call them to check the
opening hours.

Thank you for your message. I have read your question carefully, and here is my answer. First, make
sure that the program is installed correctly and that you are using the latest version. Second, check
the configuration file for any errors, especially in the lines that you changed recently. Third, look
at the log file, which usually explains what went wrong. If none of these steps helps, please send me
the log file and a short description of what you were trying to do, and I will be glad to help you.
)corpus";
}

}  // namespace kvmesh::tokenizer
