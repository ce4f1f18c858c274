"""The text calibrated pruning and distillation learn from, and how it is fed to a model.

``CALIBRATION``: 128 fixed English sentences of varied topic, length and punctuation,
written for this purpose.  ``corpus()``: up to 8,192 more, the example sentences of
WordNet's glosses (``corpus.txt``, written by ``make_corpus.py``).  Both are disjoint from
the evaluation sentences of ``sentences.py`` (a test checks it), so the cosine the example
reports is measured on sentences the pruning and distillation never saw.
``calibrate(model)`` runs them in batches of equal token count, so no batch holds padding
(padding tokens would enter the layers' input statistics but never the embeddings).
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import torch

CALIBRATION = (
    "The library opens at nine in the morning and closes at six.",
    "A young boy is kicking a red ball across the park.",
    "Two women are sitting on a bench and talking about the weather.",
    "The chef sliced the onions, then fried them in butter until golden.",
    "Our flight was delayed by three hours because of a snowstorm in Chicago.",
    "Can you recommend a good book about the history of Rome?",
    "He forgot his umbrella and got soaked on the way home.",
    "The committee will vote on the new budget next Tuesday.",
    "A dog is running along the beach with a stick in its mouth.",
    "Water boils at 100 degrees Celsius at sea level.",
    "She plays the piano every evening after dinner.",
    "The new smartphone has a larger screen and a faster processor.",
    "Farmers in the valley grow wheat, barley and sunflowers.",
    "I can't believe it's already December; the year went by so quickly!",
    "The hikers reached the summit just before the sun went down.",
    "Scientists discovered a new species of frog in the rainforest.",
    "Please turn off the lights when you leave the room.",
    "The orchestra performed Beethoven's ninth symphony to a full house.",
    "A group of students is studying for their final exams in the cafeteria.",
    "The bridge was closed for repairs for most of the summer.",
    "He ordered a coffee with milk and a slice of apple pie.",
    "The river flooded the village after a week of heavy rain.",
    "Do you know where the nearest pharmacy is?",
    "Electric cars are becoming cheaper as battery prices fall.",
    "The detective examined the footprints near the broken window.",
    "My grandmother taught me how to knit when I was seven.",
    "A man in a blue jacket is repairing a bicycle on the sidewalk.",
    "The company reported record profits in the third quarter.",
    "Volcanoes release ash and gas into the atmosphere when they erupt.",
    "They painted the kitchen walls a pale shade of yellow.",
    "The baby laughed when the puppy licked her hand.",
    "Most of the guests left the party before midnight.",
    "The teacher asked the class to write an essay about their summer holidays.",
    "Heavy traffic on the motorway made us late for the wedding.",
    "Lions usually hunt at night and rest during the heat of the day.",
    "The software update fixed several bugs and improved battery life.",
    "An old fisherman is mending his nets on the pier.",
    "She won the marathon in just under two and a half hours.",
    "The soup needs more salt and a little black pepper.",
    "Why do leaves change colour in the autumn?",
    "The museum is free on the first Sunday of every month.",
    "He has been learning Spanish online for about six months.",
    "A woman is slicing tomatoes on a wooden cutting board.",
    "The government announced new measures to reduce air pollution.",
    "The kids built a sandcastle and decorated it with shells.",
    "Our neighbours are moving to Canada next spring.",
    "The printer on the second floor is out of paper again.",
    "Bees play an essential role in pollinating crops and wildflowers.",
    "The concert was cancelled at the last minute due to illness.",
    "He apologised for the mistake and promised it would not happen again.",
    "The hotel room had a beautiful view of the harbour.",
    "Two boys are climbing a tree in the backyard.",
    "The price of petrol rose by ten cents in a single week.",
    "Regular exercise lowers the risk of heart disease.",
    "She sent her application two days before the deadline.",
    "The cat knocked a glass of water off the table.",
    "Astronomers observed a comet passing close to the Sun.",
    "The meeting has been moved from Monday to Wednesday afternoon.",
    "A crowd gathered in the square to watch the fireworks.",
    "Is it true that octopuses have three hearts?",
    "The gardener planted roses along the fence.",
    "The airline lost my suitcase, so I had to buy new clothes.",
    "Database indexes speed up queries but slow down writes.",
    "He scored the winning goal in the final minute of the match.",
    "The bakery on the corner sells fresh bread every morning.",
    "A girl in a yellow raincoat is jumping in puddles.",
    "The doctor advised him to drink more water and sleep longer.",
    "The ancient temple was rebuilt after the earthquake.",
    "We watched a documentary about whales last night.",
    "The ice on the lake was too thin to walk on.",
    "Her presentation explained the results clearly and concisely.",
    "A man is playing the guitar on a street corner for tips.",
    "The town council approved plans for a new swimming pool.",
    "Honey never spoils if it is stored in a sealed jar.",
    "The students protested against the rise in tuition fees.",
    "I'd like a table for four by the window, please.",
    "The wind blew the leaves into a pile by the garage.",
    "The submarine descended slowly into the dark water.",
    "He fixed the leaking tap with a new washer.",
    "Most birds migrate south before the winter arrives.",
    "The novel was translated into more than forty languages.",
    "A chef is decorating a cake with strawberries and cream.",
    "The power went out during the storm, so we lit candles.",
    "Researchers tested the vaccine on thousands of volunteers.",
    "The shop offers a ten percent discount to students.",
    "Two puppies are playing tug of war with a rope.",
    "The mountain road is narrow, steep and full of sharp bends.",
    "She keeps her passport in the top drawer of her desk.",
    "The referee showed the defender a red card.",
    "Our train arrived exactly on time, which surprised everyone.",
    "Recycling paper saves trees, water and energy.",
    "The toddler fell asleep in the back seat of the car.",
    "The engineers tested the bridge with heavy trucks before it opened.",
    "What time does the last bus leave for the airport?",
    "The painting was sold at auction for two million dollars.",
    "A woman is walking her dog through the snow.",
    "The factory will hire two hundred workers next year.",
    "He always reads the newspaper while eating breakfast.",
    "The storm knocked down several trees along the main road.",
    "The recipe calls for three eggs and a cup of sugar.",
    "The jury found the defendant not guilty.",
    "A pilot is checking the instruments before take-off.",
    "The children sang songs around the campfire.",
    "Our internet connection has been slow all week.",
    "The zoo welcomed a baby elephant in March.",
    "She painted a portrait of her father for his birthday.",
    "Unemployment fell to its lowest level in a decade.",
    "The glacier has shrunk dramatically over the past fifty years.",
    "He locked the door, checked the windows and went to bed.",
    "A horse is grazing in a field next to the farmhouse.",
    "The professor's lecture on quantum physics was hard to follow.",
    "They celebrated their anniversary at a small Italian restaurant.",
    "Sunlight takes about eight minutes to reach the Earth.",
    "The kitten is hiding under the sofa.",
    "Customers complained about the long queues at the checkout.",
    "The old castle on the hill is said to be haunted.",
    "Wash your hands before you touch the food.",
    "The team trained hard all season and finally won the cup.",
    "A waiter is carrying a tray of drinks to the terrace.",
    "The city plans to plant ten thousand trees by 2030.",
    "He struggled to open the jar until his sister helped.",
    "The volcano last erupted more than three centuries ago.",
    "The students designed a robot that sorts recycling.",
    "Fresh snow covered the rooftops by morning.",
    "Our manager praised the team for finishing the project early.",
    "A man and a woman are dancing at a wedding reception.",
    "The tea is too hot to drink right now.",
    "Thousands of fans waited outside the stadium for tickets.",
)


CORPUS = Path(__file__).resolve().parent / "corpus.txt"


def corpus(count: int | None = None) -> tuple[str, ...]:
    """The first ``count`` sentences of ``corpus.txt`` (all of them for None; the file is
    in a random order, so any prefix is a random sample)."""
    lines = CORPUS.read_text(encoding="utf-8").splitlines()
    sentences = tuple(s for s in lines if s and not s.startswith("#"))
    return sentences if count is None else sentences[:count]


def carried_tokens(tokenizer) -> list[int]:
    """The token ids a packed copy of the model must keep (``run.py --pack``): those of
    the evaluated sentences, the calibration sentences and the corpus, so that calibrated
    pruning and distillation give the same weights on the packed copy as on the full
    model."""
    from .sentences import SENTENCES
    return sorted({i for s in SENTENCES + CALIBRATION + corpus() for i in tokenizer.encode(s)})


def calibration_batches(tokenizer, sentences=CALIBRATION, device="cpu") -> list[tuple]:
    """The sentences tokenized and grouped by token count: a list of ``(input_ids,
    attention_mask)`` batches on ``device``, none padded, in a fixed order."""
    by_length = defaultdict(list)
    for s in sentences:
        by_length[len(tokenizer.encode(s))].append(s)
    return [tuple(t.to(device) for t in tokenizer(group))
            for _, group in sorted(by_length.items())]


def calibrator(batches: list[tuple]):
    """A ``calibrate(model)`` for ``spc.torch.prune_calibrated`` running ``batches``."""
    @torch.no_grad()
    def calibrate(model):
        for b in batches:
            model(*b)
    return calibrate
